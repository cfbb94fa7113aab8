using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// <c>--scheduler</c> and <c>--stage2-scheduler</c> with a DeepFloyd IF stage II, without diffusers output (the CPU
/// float32 tiny models if-tiny-b and if2-tiny, or a random-weight stage II built here): each option reaches its own
/// stage only, the manifest records both schedulers, and under DPM-Solver++ on both stages the sweep reproduces a serial
/// two-stage loop built here from the pipelines (the generator replay of <c>--seed-policy continue</c> must consume what
/// stage II's chosen scheduler draws, and batching must not change the images). Tolerances: the serial loop bit for bit
/// one layer per batch; all layers in one batch within 1 8-bit level (libtorch's CPU kernels round a batch differently:
/// Stage2SeedPolicyTests). Option validation before loading: Stage2Tests.BadStage2Usage. Parity with diffusers:
/// <see cref="Stage2SchedulerParityTests"/>.
/// </summary>
[Collection("pipelines")]
public class Stage2SchedulerTests
{
    private const string Prompt = "A few people are in the ocean splashing around";
    private const long Seed = 23;
    private static readonly int[] Layers = [0, 2, 3];
    private readonly ITestOutputHelper _out;
    public Stage2SchedulerTests(ITestOutputHelper output) => _out = output;

    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    private static int Worst(RgbImage a, RgbImage b)
    {
        Assert.Equal((a.Width, a.Height), (b.Width, b.Height));
        return a.Pixels.Zip(b.Pixels, (x, y) => Math.Abs(x - y)).Max();
    }

    /// <summary>
    /// --scheduler dpm++ alone runs stage I under DPM-Solver++ and leaves stage II on its own DDPMScheduler (the paper's
    /// setup); adding --stage2-scheduler dpm++ changes the stage II images only (the stage I images stay bit-identical).
    /// The manifest records stage II's scheduler and its effective config (IF's learned_range variance and thresholding
    /// carried into DPM-Solver++ as from_config does).
    /// </summary>
    [Fact]
    public void EachSchedulerOptionReachesItsOwnStageAndIsRecorded()
    {
        var stage2 = Stage2Model.Build();
        var own = CliRunner.TempPath("s2-own");
        var dpm = CliRunner.TempPath("s2-dpm");
        try
        {
            var o = new SweepOptions
            {
                ModelDir = Model("if-tiny-b"), Prompt = Prompt, Steps = 3, Layers = "0,3", OutDir = own, Scheduler = "dpm++",
                Stage2Dir = stage2, Stage2Steps = 3,
            };
            var r1 = LensSweep.Run(o);
            var r2 = LensSweep.Run(o with { OutDir = dpm, Stage2Scheduler = "dpm++" });
            var m1 = JsonNode.Parse(File.ReadAllText(r1.ManifestPath))!;
            var m2 = JsonNode.Parse(File.ReadAllText(r2.ManifestPath))!;
            foreach (var m in new[] { m1, m2 }) Assert.Equal("DPMSolverMultistepScheduler", m["scheduler"]!.GetValue<string>());
            Assert.Equal("DDPMScheduler", m1["stage2"]!["scheduler"]!.GetValue<string>());
            Assert.Equal("learned_range", m1["stage2"]!["scheduler_config"]!["variance_type"]!.GetValue<string>());
            var s2 = m2["stage2"]!;
            Assert.Equal("DPMSolverMultistepScheduler", s2["scheduler"]!.GetValue<string>());
            var cfg = s2["scheduler_config"]!;
            Assert.Equal("dpmsolver++", cfg["algorithm_type"]!.GetValue<string>());
            Assert.Equal("learned_range", cfg["variance_type"]!.GetValue<string>());
            Assert.True(cfg["thresholding"]!.GetValue<bool>());
            Assert.Equal(0.95, cfg["dynamic_thresholding_ratio"]!.GetValue<double>());
            Assert.Equal(3, s2["unet_calls_per_image"]!.GetValue<int>());
            int changed = 0;
            foreach (var l in new[] { 0, 3 })
            {
                Assert.Equal(RgbImage.Load(Path.Combine(own, $"layer-{l:D2}-stage1.png")).Pixels, RgbImage.Load(Path.Combine(dpm, $"layer-{l:D2}-stage1.png")).Pixels);
                int d = Worst(RgbImage.Load(r1.LayerImages[l]), RgbImage.Load(r2.LayerImages[l]));
                _out.WriteLine($"layer {l}: stage II DDPM vs DPM-Solver++ differ by up to {d} levels");
                if (d > 0) changed++;
            }
            Assert.True(changed == 2, "--stage2-scheduler dpm++ left a stage II image unchanged: the option did not reach stage II");
        }
        finally
        {
            foreach (var d in new[] { stage2, own, dpm }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    /// <summary>
    /// The serial two-stage loop under DPM-Solver++ on both stages, from the committed tiny models: per layer, stage I
    /// then stage II from the layer's generator (reseed: seeded anew; continue: one generator through every call). The
    /// sweep with one layer per batch reproduces it bit for bit, with all layers in one batch within 1 level.
    /// </summary>
    [Theory]
    [InlineData("reseed")]
    [InlineData("continue")]
    public void SweepUnderDpmSolverOnBothStagesMatchesSerialLoop(string policy)
    {
        var expected = new Dictionary<int, (RgbImage Stage1, RgbImage Stage2)>();
        using (var stage1 = LensPipeline.Load(Model("if-tiny-b"), scheduler: "dpm++"))
        using (var stage2 = IFSuperResolutionPipeline.Load(Model("if2-tiny"), scheduler: "dpm++"))
        {
            Assert.Equal("DPMSolverMultistepScheduler", stage2.SchedulerName);
            using var hidden = stage1.EncodeLayers(Prompt, true);
            using var neg = stage1.EncodeLayers("blurry", true);
            using var uncond = stage1.Lens(neg.Hidden[^1]);
            var d = stage1.Defaults;
            var gen1 = new GenerationOptions(Seed, 4, 4.0, d.Height, d.Width);
            var gen2 = stage2.Options(3, 5.0, 300);
            using var shared = new Generator((ulong)Seed);
            foreach (var l in Layers)
            {
                using var scope = NewDisposeScope();
                using var fresh = policy == "continue" ? null : new Generator((ulong)Seed);
                var g = fresh ?? shared;
                var cond = stage1.Lens(hidden.Hidden[l]);
                var images1 = stage1.GenerateImages([cond], uncond, gen1, [g]);
                using var unit1 = DenoisingPipeline.ToUnitHwc(images1);
                using var unit2 = stage2.Generate(images1, [cond], uncond, gen2, [g], 1);
                expected[l] = (RgbImage.FromUnitNhwc(unit1)[0], RgbImage.FromUnitNhwc(unit2)[0]);
            }
        }
        foreach (int batch in new[] { 1, Layers.Length })
        {
            var outDir = CliRunner.TempPath($"s2-dpm-{policy}-b{batch}");
            try
            {
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = Model("if-tiny-b"), Prompt = Prompt, NegativePrompt = "blurry", Seed = Seed, Steps = 4, Guidance = 4.0,
                    Layers = string.Join(",", Layers), SeedPolicy = policy, Batch = batch, OutDir = outDir, Scheduler = "dpm++",
                    Stage2Dir = Model("if2-tiny"), Stage2Steps = 3, Stage2Guidance = 5.0, NoiseLevel = 300, Stage2Scheduler = "dpm++",
                });
                int tolerance = batch == 1 ? 0 : 1;
                foreach (var l in Layers)
                {
                    int w2 = Worst(RgbImage.Load(res.LayerImages[l]), expected[l].Stage2);
                    int w1 = Worst(RgbImage.Load(Path.Combine(outDir, $"layer-{l:D2}-stage1.png")), expected[l].Stage1);
                    _out.WriteLine($"{policy} batch {batch} layer {l}: stage II {w2} levels, stage I {w1} levels from the serial loop");
                    Assert.True(w2 <= tolerance && w1 <= tolerance,
                        $"{policy} batch {batch} layer {l}: stage II {w2}, stage I {w1} levels from the serial loop (tolerance {tolerance})");
                }
            }
            finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
        }
    }
}
