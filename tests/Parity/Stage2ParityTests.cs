using DiffusionLens.Loading;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// DeepFloyd IF stage II parity with real diffusers (fixtures/references/if2-tiny, made by
/// <c>fixtures/make_reference.py if2</c>: the tiny IF-II-L-like fixtures/models/if2-tiny on the committed if-tiny-b as
/// stage I, diffusers' documented two-stage usage per lens layer — stage I with output_type="pt", then stage II on that
/// image with the same layer's embedding and the SAME generator). Float32 on the CPU. Tolerances: the reference's (CPU
/// float32: rel L2 1e-5 and max |diff| 1e-4 x max(1, max|ref|); images within 2 8-bit levels); the random draws
/// (stage II's intermediate images and upscale noise) bit for bit. Skipped, naming the folder, until the fixture is
/// committed.
/// </summary>
[Collection("pipelines")]
public class Stage2ParityTests
{
    private readonly ITestOutputHelper _out;
    public Stage2ParityTests(ITestOutputHelper output) => _out = output;

    public const string Name = "if2-tiny";
    private static string Folder => Path.Combine(ReferenceData.ReferencesDir, Name);

    private static ReferenceData OpenOrSkip()
    {
        if (!File.Exists(Path.Combine(Folder, "reference.json")))
            Assert.Skip($"the IF stage II fixture {Folder} is not committed yet (python fixtures/make_reference.py if2 writes it and fixtures/models/{Name})");
        var r = ReferenceData.OpenFolder(Folder);
        if (r.SkipReason is string why) Assert.Skip(why);
        Assert.Equal(ReferenceData.Stage2Kind, r.Kind);
        return r;
    }

    private static string Stage1Path(ReferenceData r) =>
        Path.Combine(ReferenceData.RepoRoot, r.Json["stage1"]!["path"]!.GetValue<string>());
    private static int NoiseLevel(ReferenceData r) => r.Json["noise_level"]!.GetValue<int>();
    private static int TraceLayer(ReferenceData r) => r.Json["trace_layer"]!.GetValue<int>();
    private static SuperResolutionOptions Options(ReferenceData r) => new(r.Steps, r.Guidance, NoiseLevel(r), r.Height, r.Width);
    private static GenerationOptions Stage1Options(ReferenceData r)
    {
        var run = r.Json["stage1"]!["run"]!;
        return new GenerationOptions(run["seed"]!.GetValue<long>(), run["steps"]!.GetValue<int>(), run["guidance"]!.GetValue<double>(),
            run["height"]!.GetValue<int>(), run["width"]!.GetValue<int>());
    }

    /// <summary>The CPU generator at the position stage I leaves it: seeded, then every draw stage I made (recorded shapes).</summary>
    private static Generator AfterStage1(ReferenceData r)
    {
        var g = new Generator((ulong)r.Seed);
        foreach (var shape in r.Json["stage1_draw_shapes"]!.AsArray())
            torch.randn(shape!.AsArray().Select(x => x!.GetValue<long>()).ToArray(), dtype: ScalarType.Float32, generator: g).Dispose();
        return g;
    }

    /// <summary>
    /// Steps 5 and 7 of diffusers' __call__ from the stage I images diffusers handed over: the intermediate images and
    /// the upscale noise drawn in that order (bit for bit), the bilinear align_corners upscale and add_noise at the
    /// noise level (tolerance), for every layer.
    /// </summary>
    [Fact]
    public void UpscaledAndNoisedImagesMatchDiffusers()
    {
        using var r = OpenOrSkip();
        using var sr = IFSuperResolutionPipeline.Load(r.ModelPath!, r.Device, r.DType);
        Assert.Equal(NoiseLevel(r), (int)r.ReadLongs("stage2.noise_level")[0]);
        foreach (var l in r.Layers)
        {
            using var scope = NewDisposeScope();
            using var scheduler = Scheduler.FromConfig(sr.SchedulerConfig);
            scheduler.SetTimesteps(r.Steps);
            var (intermediate, upscaled) = sr.PrepareInputs(r.Read($"layer.{l}.stage1_images"), Options(r), scheduler, AfterStage1(r));
            Assert.True(ReferenceData.Identical(intermediate.cpu(), r.Read("stage2.init_images")), $"layer {l}: stage II's intermediate images differ from diffusers' draw");
            r.AssertMatches($"layer.{l}.upscaled", upscaled, _out);
        }
        // the upscale noise alone: drawn after the intermediate images, from the same generator
        using var g = AfterStage1(r);
        using var first = torch.randn(new long[] { 1, sr.ImageChannels, r.Height, r.Width }, dtype: ScalarType.Float32, generator: g);
        using var second = torch.randn(new long[] { 1, sr.ImageChannels, r.Height, r.Width }, dtype: ScalarType.Float32, generator: g);
        Assert.True(ReferenceData.Identical(second, r.Read("stage2.upscale_noise")));
    }

    /// <summary>The first UNet call of the traced layer fed diffusers' inputs (model input, timestep, class labels, embeddings).</summary>
    [Fact]
    public void FirstUNetCallMatchesDiffusers()
    {
        using var r = OpenOrSkip();
        using var sr = IFSuperResolutionPipeline.Load(r.ModelPath!, r.Device, r.DType);
        using var scope = NewDisposeScope();
        Assert.Equal(Enumerable.Repeat((long)NoiseLevel(r), 2), r.ReadLongs("unet.class_labels"));
        var output = sr.UNet.Forward(r.Read("unet.sample"), r.Read("unet.timestep"), r.Read("unet.encoder_hidden_states"),
            classLabels: r.Read("unet.class_labels"));
        r.AssertMatches("unet.out", output, _out);
    }

    /// <summary>
    /// Teacher-forced steps of the traced layer: each step fed diffusers' image before it, its upscaled image and the
    /// generator at diffusers' position; the guided prediction against steps.model_output, the scheduler step (from
    /// diffusers' prediction) against steps.images.
    /// </summary>
    [Fact]
    public void EveryStage2StepMatchesWhenFedDiffusersInputs()
    {
        using var r = OpenOrSkip();
        using var sr = IFSuperResolutionPipeline.Load(r.ModelPath!, r.Device, r.DType);
        int l = TraceLayer(r);
        using var scheduler = Scheduler.FromConfig(sr.SchedulerConfig);
        scheduler.SetTimesteps(r.Steps);
        Assert.Equal(r.ReadLongs("timesteps"), scheduler.Timesteps);
        using var embeds = torch.cat(new[] { r.Read("negative_embeds"), r.Read($"lens.{l}") }, 0);
        using var upscaled = r.Read($"layer.{l}.upscaled");
        using var init = r.Read("stage2.init_images");
        using var stepOut = r.Read("steps.images");
        using var stepPred = r.Read("steps.model_output");
        Assert.Equal(r.Json["unet_calls"]!.GetValue<int>(), (int)stepOut.shape[0]);
        var generator = AfterStage1(r);
        for (int i = 0; i < 2; i++) torch.randn(init.shape, dtype: ScalarType.Float32, generator: generator).Dispose(); // stage II's two draws
        double worst = 0;
        for (int i = 0; i < scheduler.Timesteps.Length; i++)
        {
            using var scope = NewDisposeScope();
            var x = i == 0 ? init : stepOut[i - 1].unsqueeze(0);
            var pred = sr.GuidedPrediction(scheduler, x, scheduler.Timesteps[i], embeds, r.Guidance, upscaled, NoiseLevel(r));
            worst = Math.Max(worst, r.AssertMatches($"step_pred.{i}", pred[0], expected: stepPred[i]));
            var next = scheduler.Step(stepPred[i].unsqueeze(0), scheduler.Timesteps[i], x, generator);
            worst = Math.Max(worst, r.AssertMatches($"step_out.{i}", next[0], expected: stepOut[i]));
        }
        _out.WriteLine($"{Name}: {scheduler.Timesteps.Length} stage II steps, worst rel L2 {worst:E2}");
    }

    private void AssertImage(ReferenceData r, string what, Tensor expected, Tensor actual)
    {
        var a8 = RgbImage.FromUnitHwc(actual);
        var e8 = RgbImage.FromUnitHwc(expected);
        int maxLevels = a8.Pixels.Zip(e8.Pixels, (x, y) => Math.Abs(x - y)).Max();
        var (maxAbs, _, rel) = ReferenceData.Compare(actual, expected);
        _out.WriteLine($"{Name} {what}: max |diff| {maxAbs:E2}, 8-bit max diff {maxLevels}, rel L2 {rel:E2}");
        Assert.True(maxLevels <= r.Tol.ImageLevels, $"{Name} {what}: 8-bit images differ by {maxLevels} levels (tolerance {r.Tol.ImageLevels})");
    }

    /// <summary>
    /// The whole two-stage flow per layer from the prompt: stage I (if-tiny-b) with the layer's own lens embedding
    /// (GenerateImages, pt images within tolerance of diffusers'), then stage II continuing the same generator; the final
    /// image within 2 levels of diffusers'.
    /// </summary>
    [Fact]
    public void EveryLayerTwoStageImageMatchesDiffusers()
    {
        using var r = OpenOrSkip();
        using var stage1 = LensPipeline.Load(Stage1Path(r), r.Device, r.DType);
        using var sr = IFSuperResolutionPipeline.Load(r.ModelPath!, r.Device, r.DType);
        using var layers = stage1.EncodeLayers(r.Prompt, r.CleanCaption ?? r.Json["clean_caption"]!.GetValue<bool>());
        using var neg = stage1.EncodeLayers(r.NegativePrompt, r.Json["clean_caption"]!.GetValue<bool>());
        using var uncond = stage1.Lens(neg.Hidden[^1]);
        r.AssertMatches("negative_embeds", uncond, _out);
        var gen1 = Stage1Options(r);
        foreach (var l in r.Layers)
        {
            using var scope = NewDisposeScope();
            var cond = stage1.Lens(layers.Hidden[l]);
            r.AssertMatches($"lens.{l}", cond);
            var generator = new Generator((ulong)gen1.Seed);
            var images1 = stage1.GenerateImages(new[] { cond }, uncond, gen1, [generator]);
            r.AssertMatches($"layer.{l}.stage1_images", images1, _out);
            var unit = sr.Generate(images1, new[] { cond }, uncond, Options(r), generator);
            using var expected = r.Read($"layer.{l}.image");
            AssertImage(r, $"layer {l}", expected, unit[0]);
        }
    }

    /// <summary>lens sweep --stage2 reproduces diffusers' two-stage images (layer-XX.png) and stage I images (layer-XX-stage1.png).</summary>
    [Fact]
    public void SweepWithStage2ReproducesDiffusers()
    {
        using var r = OpenOrSkip();
        var gen1 = Stage1Options(r);
        var outDir = CliRunner.TempPath("if2-sweep");
        try
        {
            var result = LensSweep.Run(new SweepOptions
            {
                ModelDir = Stage1Path(r), Prompt = r.Prompt, NegativePrompt = r.NegativePrompt, Seed = gen1.Seed, Steps = gen1.Steps,
                Guidance = gen1.Guidance, Height = gen1.Height, Width = gen1.Width, CleanCaption = r.Json["clean_caption"]!.GetValue<bool>(),
                Layers = string.Join(",", r.Layers), OutDir = outDir, Batch = 2,
                Stage2Dir = r.ModelPath, Stage2Steps = r.Steps, Stage2Guidance = r.Guidance, NoiseLevel = NoiseLevel(r),
            });
            foreach (var l in r.Layers)
            {
                var mine = RgbImage.Load(result.LayerImages[l]);
                var theirs = RgbImage.Load(Path.Combine(r.Folder, $"layer-{l:D2}.png"));
                int worst = mine.Pixels.Zip(theirs.Pixels, (x, y) => Math.Abs(x - y)).Max();
                Assert.True(worst <= r.Tol.ImageLevels, $"layer {l}: stage II PNG differs from diffusers' by {worst} levels");
                var mine1 = RgbImage.Load(Path.Combine(outDir, $"layer-{l:D2}-stage1.png"));
                var theirs1 = RgbImage.Load(Path.Combine(r.Folder, $"layer-{l:D2}-stage1.png"));
                int worst1 = mine1.Pixels.Zip(theirs1.Pixels, (x, y) => Math.Abs(x - y)).Max();
                Assert.True(worst1 <= r.Tol.ImageLevels, $"layer {l}: stage I PNG differs from diffusers' by {worst1} levels");
            }
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }
}
