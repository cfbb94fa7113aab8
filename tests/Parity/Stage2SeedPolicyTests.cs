using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// <c>lens sweep --stage2</c> under <c>--seed-policy continue</c> and with <c>--images-per-layer N</c>, against a serial
/// two-stage loop built here from the committed tiny models (fixtures/models/if-tiny-b + if2-tiny, CPU float32): per
/// layer, stage I for N images from the layer's generator, then stage II on those N images (one stage II image each)
/// continuing the same generator; reseed seeds a generator for every layer, continue passes ONE generator from layer to
/// layer. The loop runs the pipelines one layer at a time and never touches the sweep's replay or batching. Expected
/// values: that loop's images and generator states (no recorded numbers). Tolerances: generator states and the
/// one-layer-per-batch sweep bit for bit; a sweep batching all layers within 1 8-bit level (libtorch's CPU kernels
/// round a batch of 3 layers differently from 1: SweepTests, Stage2Tests.BatchedStage2MatchesOneLayerAtATime).
/// Parity with diffusers' own loop: <see cref="Stage2SeedParityTests"/>.
/// </summary>
[Collection("pipelines")]
public class Stage2SeedPolicyTests
{
    private const string Prompt = "A few people are in the ocean splashing around";
    private const long Seed = 29;
    private static readonly int[] Layers = [0, 2, 3];
    private readonly ITestOutputHelper _out;
    public Stage2SeedPolicyTests(ITestOutputHelper output) => _out = output;

    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    private static SweepOptions Options(string policy, int n, int batch, string outDir) => new()
    {
        ModelDir = Model("if-tiny-b"), Prompt = Prompt, NegativePrompt = "blurry", Seed = Seed, Steps = 3, Guidance = 4.0,
        Layers = string.Join(",", Layers), SeedPolicy = policy, ImagesPerLayer = n, Batch = batch, OutDir = outDir,
        Stage2Dir = Model("if2-tiny"), Stage2Steps = 3, Stage2Guidance = 5.0, NoiseLevel = 300,
    };

    /// <summary>What the serial loop made for one layer: its generator's state at the start, the stage I and stage II images.</summary>
    private sealed record SerialLayer(Generator Start, RgbImage[] Stage1, RgbImage[] Stage2);

    /// <summary>The serial two-stage loop over <see cref="Layers"/> (the reference the sweep must reproduce).</summary>
    private static Dictionary<int, SerialLayer> SerialLoop(string policy, int n)
    {
        using var stage1 = LensPipeline.Load(Model("if-tiny-b"));
        using var stage2 = IFSuperResolutionPipeline.Load(Model("if2-tiny"));
        using var hidden = stage1.EncodeLayers(Prompt, true);
        using var neg = stage1.EncodeLayers("blurry", true);
        using var uncond = stage1.Lens(neg.Hidden[^1]);
        var d = stage1.Defaults;
        var gen1 = new GenerationOptions(Seed, 3, 4.0, d.Height, d.Width) { ImagesPerPrompt = n };
        var gen2 = stage2.Options(3, 5.0, 300);
        using var shared = new Generator((ulong)Seed);
        var result = new Dictionary<int, SerialLayer>();
        foreach (var l in Layers)
        {
            using var scope = NewDisposeScope();
            using var own = policy == "continue" ? null : new Generator((ulong)Seed);
            var g = own ?? shared;
            var start = DiffusionLens.Schedulers.NoisePlan.Fork(g);
            var cond = stage1.Lens(hidden.Hidden[l]);
            var images1 = stage1.GenerateImages([cond], uncond, gen1, [g]);
            using var unit1 = DenoisingPipeline.ToUnitHwc(images1);
            using var unit2 = stage2.Generate(images1, [cond], uncond, gen2, [g], n);
            Assert.Equal(n, (int)unit2.shape[0]);
            result[l] = new SerialLayer(start, RgbImage.FromUnitNhwc(unit1), RgbImage.FromUnitNhwc(unit2));
        }
        return result;
    }

    private static int Worst(RgbImage a, RgbImage b)
    {
        Assert.Equal((a.Width, a.Height), (b.Width, b.Height));
        return a.Pixels.Zip(b.Pixels, (x, y) => Math.Abs(x - y)).Max();
    }

    /// <summary>
    /// The sweep's images equal the serial loop's, both stages, for every layer and image: bit for bit one layer per
    /// batch, within 1 level with all layers in one batch; under continue, the layers' replayed generator states
    /// equal the serial loop's bit for bit and differ from a fresh seed after the first layer.
    /// </summary>
    [Theory]
    [InlineData("reseed", 2)]
    [InlineData("continue", 1)]
    [InlineData("continue", 2)]
    public void SweepEqualsTheSerialTwoStageLoop(string policy, int n)
    {
        var serial = SerialLoop(policy, n);
        try
        {
            foreach (int batch in new[] { 1, Layers.Length })
            {
                var outDir = CliRunner.TempPath($"s2-{policy}-{n}-b{batch}");
                try
                {
                    var res = LensSweep.Run(Options(policy, n, batch, outDir));
                    var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                    Assert.Equal(policy, m["seed_policy"]!.GetValue<string>());
                    foreach (var l in Layers)
                        for (int i = 0; i < n; i++)
                        {
                            string name = n == 1 ? $"layer-{l:D2}.png" : $"layer-{l:D2}-{i}.png";
                            string name1 = n == 1 ? $"layer-{l:D2}-stage1.png" : $"layer-{l:D2}-stage1-{i}.png";
                            int w2 = Worst(RgbImage.Load(Path.Combine(outDir, name)), serial[l].Stage2[i]);
                            int w1 = Worst(RgbImage.Load(Path.Combine(outDir, name1)), serial[l].Stage1[i]);
                            _out.WriteLine($"{policy} N={n} batch {batch} layer {l} image {i}: stage I {w1}, stage II {w2} levels from the serial loop");
                            int tolerance = batch == 1 ? 0 : 1;
                            Assert.True(w1 <= tolerance, $"{policy} N={n} batch {batch} layer {l} image {i}: stage I {w1} levels from the serial loop");
                            Assert.True(w2 <= tolerance, $"{policy} N={n} batch {batch} layer {l} image {i}: stage II {w2} levels from the serial loop");
                        }
                }
                finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
            }
            if (policy != "continue") return;
            // the replay alone: each layer's generator where the serial loop's stood when that layer began
            using var stage1 = LensPipeline.Load(Model("if-tiny-b"));
            using var stage2 = IFSuperResolutionPipeline.Load(Model("if2-tiny"));
            var d = stage1.Defaults;
            var gen1 = new GenerationOptions(Seed, 3, 4.0, d.Height, d.Width) { ImagesPerPrompt = n };
            var gen2 = stage2.Options(3, 5.0, 300);
            var replayed = LayerGenerators.Continue(Seed, Layers.Length, g => { stage1.ConsumeCallNoise(g, gen1); stage2.ConsumeCallNoise(g, gen2, n); });
            using var fresh = new Generator((ulong)Seed);
            for (int j = 0; j < Layers.Length; j++)
            {
                Assert.True(LayerGenerators.SameState(replayed[j], serial[Layers[j]].Start), $"continue N={n}: the replayed generator of layer {Layers[j]} is not where the serial loop's was");
                Assert.Equal(j == 0, LayerGenerators.SameState(replayed[j], fresh));
                replayed[j].Dispose();
            }
            // stage I's draws alone are not a layer's: without stage II's the replay is elsewhere
            var stage1Only = LayerGenerators.Continue(Seed, 2, g => stage1.ConsumeCallNoise(g, gen1));
            Assert.False(LayerGenerators.SameState(stage1Only[1], serial[Layers[1]].Start), "the replay must include stage II's draws");
            foreach (var g in stage1Only) g.Dispose();
        }
        finally
        {
            foreach (var s in serial.Values) s.Start.Dispose();
        }
    }

    /// <summary>
    /// File names with N images per layer: layer-XX-i.png (stage II) beside layer-XX-stage1-i.png (the stage I image it
    /// upscaled); the manifest's files/stage1_files name each layer's first, layer_files/stage1_layer_files all, in order.
    /// </summary>
    [Fact]
    public void ImagesPerLayerNameBothStagesAndTheManifestListsThem()
    {
        var outDir = CliRunner.TempPath("s2-names");
        try
        {
            var res = LensSweep.Run(Options("continue", 2, 2, outDir) with { Layers = "1,3", Steps = 2, Stage2Steps = 2 });
            var files = Directory.GetFiles(outDir).Select(Path.GetFileName).OrderBy(f => f, StringComparer.Ordinal).ToArray();
            Assert.Equal(new[]
            {
                "grid.png", "layer-01-0.png", "layer-01-1.png", "layer-01-stage1-0.png", "layer-01-stage1-1.png",
                "layer-03-0.png", "layer-03-1.png", "layer-03-stage1-0.png", "layer-03-stage1-1.png", "manifest.json",
            }, files);
            var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
            Assert.Equal(2, m["images_per_layer"]!.GetValue<int>());
            Assert.Equal("layer-03-0.png", m["files"]!["3"]!.GetValue<string>());
            Assert.Equal("layer-03-stage1-0.png", m["stage1_files"]!["3"]!.GetValue<string>());
            Assert.Equal(new[] { "layer-01-0.png", "layer-01-1.png" }, m["layer_files"]!["1"]!.AsArray().Select(x => x!.GetValue<string>()));
            Assert.Equal(new[] { "layer-01-stage1-0.png", "layer-01-stage1-1.png" }, m["stage1_layer_files"]!["1"]!.AsArray().Select(x => x!.GetValue<string>()));
            Assert.Equal((48, 48), (RgbImage.Load(Path.Combine(outDir, "layer-01-1.png")).Width, RgbImage.Load(Path.Combine(outDir, "layer-01-1.png")).Height));
            // the two images of a layer are different draws
            Assert.True(Worst(RgbImage.Load(Path.Combine(outDir, "layer-01-0.png")), RgbImage.Load(Path.Combine(outDir, "layer-01-1.png"))) > 8);
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }

    /// <summary>With one image per layer the manifest has no per-image lists (as without a stage II).</summary>
    [Fact]
    public void OneImagePerLayerKeepsTheSingleFileManifest()
    {
        var outDir = CliRunner.TempPath("s2-one");
        try
        {
            var res = LensSweep.Run(Options("continue", 1, 2, outDir) with { Layers = "3", Steps = 1, Stage2Steps = 1 });
            var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
            Assert.Equal("layer-03-stage1.png", m["stage1_files"]!["3"]!.GetValue<string>());
            Assert.Null(m["stage1_layer_files"]);
            Assert.Null(m["layer_files"]);
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }
}
