using System.Text.Json.Nodes;
using DiffusionLens.Cli;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// DeepFloyd IF stage II without diffusers output: the super-resolution UNet's state-dict keys (as diffusers names them
/// for class_embed_type "timestep"), the stage II loop on a random-weight model built here (<see cref="Stage2Model"/>)
/// after the tiny IF stage I, batching, the manifest, and the CLI's validation before any weights load.
/// Parity with diffusers: <see cref="Stage2ParityTests"/>.
/// </summary>
[Collection("pipelines")]
public class Stage2Tests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);
    private const string Prompt = "A few people are in the ocean splashing around";

    private static Dictionary<string, long[]> Keys(nn.Module m) => m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    /// <summary>
    /// diffusers' _set_class_embedding for "timestep": class_embedding = TimestepEmbedding(timestep_input_dim =
    /// block_out_channels[0], time_embed_dim = time_embedding_dim, act_fn) — linear_1 and linear_2 with biases, no
    /// cond_proj; the rest as IF (encoder_hid_proj from the T5 width, add_embedding, scale-shift resnets, only
    /// cross-attention: add_k_proj/add_v_proj but no to_k/to_v).
    /// </summary>
    [Fact]
    public void SuperResolutionUNetHasDiffusersKeysForTheTimestepClassEmbedding()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Stage2Model.UNetConfig));
        var k = Keys(unet);
        void Has(string key, params long[] shape)
        {
            Assert.True(k.ContainsKey(key), $"missing state-dict key '{key}'");
            Assert.Equal(shape, k[key]);
        }
        // time_embed_dim = time_embedding_dim = 32; timestep_input_dim = block_out_channels[0] = 16
        Has("class_embedding.linear_1.weight", 32, 16);
        Has("class_embedding.linear_1.bias", 32);
        Has("class_embedding.linear_2.weight", 32, 32);
        Has("class_embedding.linear_2.bias", 32);
        Assert.Equal(4, k.Keys.Count(x => x.StartsWith("class_embedding.", StringComparison.Ordinal)));
        Has("time_embedding.linear_1.weight", 32, 16);
        Has("time_embedding.linear_2.weight", 32, 32);
        Has("conv_in.weight", 16, 6, 3, 3);
        Has("conv_out.weight", 6, 16, 3, 3);
        Has("encoder_hid_proj.weight", 32, 24);
        Has("add_embedding.norm1.weight", 24);
        Has("down_blocks.0.resnets.0.time_emb_proj.weight", 32, 32); // scale_shift: 2 x 16 out
        Has("down_blocks.0.downsamplers.0.conv1.weight", 16, 16, 3, 3);
        Has("down_blocks.2.attentions.0.add_k_proj.weight", 32, 32);
        Assert.False(k.ContainsKey("down_blocks.2.attentions.0.to_k.weight"), "only_cross_attention: no to_k");
        Has("mid_block.attentions.0.to_q.weight", 32, 32);
        Assert.Equal("timestep", unet.ClassEmbedType);
        Assert.Equal(2, unet.NumUpsamplers);
        Assert.Equal(4, unet.SizeMultiple);
    }

    [Fact]
    public void SuperResolutionUNetTakesTheNoiseLevelAsClassLabels()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Stage2Model.UNetConfig));
        Stage2Model.Randomize(unet, 5);
        unet.eval();
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var g = new Generator(5);
        var x = torch.randn(new long[] { 2, 6, 16, 16 }, generator: g);
        var t = torch.tensor(500L);
        var ehs = torch.randn(new long[] { 2, 7, 24 }, generator: g);
        var a = unet.Forward(x, t, ehs, classLabels: torch.tensor(new long[] { 250, 250 }));
        Assert.Equal(new long[] { 2, 6, 16, 16 }, a.shape);
        var b = unet.Forward(x, t, ehs, classLabels: torch.tensor(new long[] { 250, 900 }));
        // (kernel rounding may differ between calls; the other row's label must not matter beyond it)
        var (_, _, rowRel) = ReferenceData.Compare(a[0], b[0]);
        Assert.True(rowRel < 1e-5, $"a row's class label changes only that row (row 0 rel L2 {rowRel:E2})");
        var (_, _, changedRel) = ReferenceData.Compare(a[1], b[1]);
        Assert.True(changedRel > 1e-3, $"the noise level must reach the output (row 1 rel L2 {changedRel:E2})");
        var e = Assert.Throws<LensException>(() => unet.Forward(x, t, ehs));
        Assert.Contains("class_labels", e.Message);
    }

    /// <summary>diffusers' DDPMScheduler.add_noise at the noise level, and the defaults of IFSuperResolutionPipeline.__call__.</summary>
    [Fact]
    public void AddNoiseIsSqrtAlphaBarMixAndDefaultsAreDiffusers()
    {
        var dir = Stage2Model.Build();
        try
        {
            using var sr = IFSuperResolutionPipeline.Load(dir);
            var o = sr.Options(null, null, null);
            Assert.Equal(new SuperResolutionOptions(50, 4.0, 250, 48, 48), o);
            using var scope = NewDisposeScope();
            var x = torch.randn(2, 3, 4, 4);
            var n = torch.randn(2, 3, 4, 4);
            using var noising = new DiffusionLens.Schedulers.DDPMScheduler(DiffusersConfig.FromJson(Stage2Model.ImageNoisingScheduler));
            double a = noising.AlphasCumprod[250].item<float>();
            var expected = x * Math.Sqrt(a) + n * Math.Sqrt(1 - a);
            var (maxAbs, _, _) = ReferenceData.Compare(sr.AddNoise(x, n, 250), expected);
            Assert.True(maxAbs < 1e-6, $"add_noise max |diff| {maxAbs:E2}");
            Assert.Throws<LensException>(() => sr.AddNoise(x, n, 1000));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// The sweep with a stage II: layer-XX.png is the stage II image (the UNet's sample size), layer-XX-stage1.png is
    /// stage I's and equals the plain stage I sweep's image exactly; the manifest records the stage II settings.
    /// </summary>
    [Fact]
    public void SweepWithStage2WritesBothStagesAndRecordsStage2()
    {
        var stage2 = Stage2Model.Build();
        var plain = CliRunner.TempPath("s1");
        var two = CliRunner.TempPath("s2");
        try
        {
            var common = new SweepOptions { ModelDir = Model("if-tiny-b"), Prompt = Prompt, Steps = 3, Layers = "0,3", OutDir = plain };
            var r1 = LensSweep.Run(common);
            var r2 = LensSweep.Run(common with { OutDir = two, Stage2Dir = stage2, Stage2Steps = 2 });
            var files = Directory.GetFiles(two).Select(Path.GetFileName).OrderBy(f => f, StringComparer.Ordinal).ToArray();
            Assert.Equal(new[] { "grid.png", "layer-00-stage1.png", "layer-00.png", "layer-03-stage1.png", "layer-03.png", "manifest.json" }, files);
            foreach (var l in new[] { 0, 3 })
            {
                var s2 = RgbImage.Load(r2.LayerImages[l]);
                Assert.Equal((48, 48), (s2.Width, s2.Height));
                var s1 = RgbImage.Load(Path.Combine(two, $"layer-{l:D2}-stage1.png"));
                Assert.Equal(RgbImage.Load(r1.LayerImages[l]).Pixels, s1.Pixels);
            }
            var m = JsonNode.Parse(File.ReadAllText(r2.ManifestPath))!;
            Assert.Equal("IFPipeline", m["pipeline"]!.GetValue<string>());
            Assert.Equal(24, m["height"]!.GetValue<int>());
            Assert.Equal("layer-03-stage1.png", m["stage1_files"]!["3"]!.GetValue<string>());
            var s = m["stage2"]!;
            Assert.Equal(Path.GetFullPath(stage2), s["model"]!.GetValue<string>());
            Assert.Equal("IFSuperResolutionPipeline", s["pipeline"]!.GetValue<string>());
            Assert.Equal("DDPMScheduler", s["scheduler"]!.GetValue<string>());
            Assert.Equal(2, s["steps"]!.GetValue<int>());
            Assert.Equal(2, s["unet_calls_per_image"]!.GetValue<int>());
            Assert.Equal(4.0, s["guidance"]!.GetValue<double>());  // diffusers' stage II default
            Assert.Equal(250, s["noise_level"]!.GetValue<int>());  // diffusers' default
            Assert.Equal(48, s["height"]!.GetValue<int>());
            Assert.Null(s["variant"]);
            Assert.Equal(64, s["weights_sha256"]!["unet/diffusion_pytorch_model.safetensors"]!.GetValue<string>().Length);
            var grid = RgbImage.Load(r2.GridPath);
            Assert.True(grid.Width > 2 * 48, "the grid shows the stage II images");
            Assert.Null(JsonNode.Parse(File.ReadAllText(r1.ManifestPath))!["stage2"]);
        }
        finally
        {
            foreach (var d in new[] { stage2, plain, two }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    /// <summary>
    /// Stage II images of layers denoised together match one layer at a time up to kernel rounding: at most 1 8-bit
    /// level on any pixel, as stage I's (SweepTests.BatchedLayersMatchOneLayerAtATime). Not bit-identical on the CPU:
    /// libtorch's batched kernels already round stage I's images differently (measured up to 8e-5 on if-tiny-b, 3e-4
    /// after this stage II), while every row draws the same noise as a single-layer run.
    /// </summary>
    [Fact]
    public void BatchedStage2MatchesOneLayerAtATime()
    {
        var stage2 = Stage2Model.Build();
        var one = CliRunner.TempPath("b1");
        var four = CliRunner.TempPath("b4");
        try
        {
            var common = new SweepOptions { ModelDir = Model("if-tiny-b"), Prompt = Prompt, Steps = 3, OutDir = one, Stage2Dir = stage2, Stage2Steps = 3, NoiseLevel = 100 };
            var r1 = LensSweep.Run(common);
            var r4 = LensSweep.Run(common with { OutDir = four, Batch = 4 });
            Assert.Equal(r1.Layers, r4.Layers);
            static int Worst(string a, string b) =>
                RgbImage.Load(a).Pixels.Zip(RgbImage.Load(b).Pixels, (x, y) => Math.Abs(x - y)).Max();
            foreach (var l in r1.Layers)
            {
                int s2 = Worst(r1.LayerImages[l], r4.LayerImages[l]);
                Assert.True(s2 <= 1, $"layer {l}: batched stage II image differs by {s2} levels");
                int s1 = Worst(Path.Combine(one, $"layer-{l:D2}-stage1.png"), Path.Combine(four, $"layer-{l:D2}-stage1.png"));
                Assert.True(s1 <= 1, $"layer {l}: batched stage I image differs by {s1} levels");
            }
            Assert.Equal(4, JsonNode.Parse(File.ReadAllText(r4.ManifestPath))!["batch"]!.GetValue<int>());
        }
        finally
        {
            foreach (var d in new[] { stage2, one, four }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    /// <summary>A copy whose weights files are all garbage: an error that is not about them came before any load.</summary>
    private static void CorruptWeights(string dir)
    {
        foreach (var f in Directory.GetFiles(dir, "*.safetensors", SearchOption.AllDirectories))
            File.WriteAllBytes(f, new byte[] { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3 });
    }

    public static TheoryData<string, string[], string> BadStage2Usage() => new()
    {
        { "sd-tiny-b", new[] { "--stage2", "STAGE2" }, "--stage2 applies to DeepFloyd IF stage I models (IFPipeline) only" },
        { "if-tiny-b", new[] { "--stage2", Model("if-tiny-b") }, "names the pipeline IFPipeline, not IFSuperResolutionPipeline" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--noise-level", "1000" }, "--noise-level 1000 must be a valid timestep of the image noising scheduler, in [0, 1000)" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--noise-level", "-1" }, "--noise-level -1 must be a valid timestep" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--stage2-steps", "0" }, "--stage2-steps must be at least 1" },
        { "if-tiny-b", new[] { "--noise-level", "100" }, "--noise-level applies to a DeepFloyd IF stage II only: pass the super-resolution model with --stage2" },
        { "if-tiny-b", new[] { "--stage2-steps", "3", "--stage2-guidance", "2" }, "--stage2-steps, --stage2-guidance apply to a DeepFloyd IF stage II only" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--noise-level", "x" }, "option '--noise-level' must be an integer" },
        { "STAGE2", Array.Empty<string>(), "(a super-resolution stage: pass it with --stage2, and the IF stage I folder with --model)" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--stage2-scheduler", "dpm+" }, "--stage2-scheduler: unknown scheduler 'dpm+'; accepted: PNDMScheduler, DDPMScheduler" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--stage2-scheduler", "ddim" }, "--stage2-scheduler DDIMScheduler cannot run this IF stage II: its scheduler config has variance_type 'learned_range'" },
        { "if-tiny-b", new[] { "--stage2", "STAGE2", "--scheduler", "dpm++", "--stage2-scheduler", "EulerDiscreteScheduler" }, "--stage2-scheduler EulerDiscreteScheduler cannot run this IF stage II" },
        { "if-tiny-b", new[] { "--stage2-scheduler", "dpm++" }, "--stage2-scheduler applies to a DeepFloyd IF stage II only: pass the super-resolution model with --stage2" },
    };

    /// <summary>Usage errors exit 2 with one line, write nothing, and come before any weights are read (all weights are garbage here).</summary>
    [Theory, MemberData(nameof(BadStage2Usage))]
    public void BadStage2UsageFailsBeforeAnyWeightsLoad(string model, string[] extra, string expected)
    {
        var stage2 = Stage2Model.Build();
        var stage1 = model == "STAGE2" ? stage2 : CliRunner.CopyModel(model);
        try
        {
            CorruptWeights(stage2);
            if (stage1 != stage2) CorruptWeights(stage1);
            var outDir = CliRunner.TempPath("stage2-usage");
            var args = new List<string> { "sweep", "--model", stage1, "--prompt", "a cat", "--out", outDir };
            args.AddRange(extra.Select(a => a == "STAGE2" ? stage2 : a));
            var r = CliRunner.Run(args.ToArray());
            Assert.Equal(ExitCodes.Usage, r.ExitCode);
            Assert.Contains(expected, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
            Assert.DoesNotContain("loading", r.Stderr);
            Assert.Single(r.Stderr.Trim().Split('\n'));
            Assert.False(Directory.Exists(outDir));
        }
        finally
        {
            Directory.Delete(stage2, true);
            if (stage1 != stage2) Directory.Delete(stage1, true);
        }
    }

    /// <summary>A stage II whose UNet does not fit stage I (prompt-embedding width, image channels) is refused from the configs.</summary>
    [Theory]
    [InlineData("encoder_hid_dim", "32", "takes 32-wide prompt embeddings (encoder_hid_dim / cross_attention_dim) but stage I's text encoder makes 24-wide ones (d_model)")]
    [InlineData("in_channels", "8", "upscales 4-channel images (in_channels 8) but stage I makes 3-channel images")]
    [InlineData("class_embed_type", "null", "IF's super-resolution UNet takes the noise level through class_embed_type timestep")]
    [InlineData("class_embed_type", "\"projection\"", "'class_embed_type' = projection is not supported")]
    public void MismatchedStage2IsRefusedFromItsConfig(string field, string json, string expected)
    {
        var node = JsonNode.Parse(Stage2Model.UNetConfig)!.AsObject();
        var stage2 = Stage2Model.Build();
        try
        {
            node[field] = JsonNode.Parse(json);
            File.WriteAllText(Path.Combine(stage2, "unet", "config.json"), node.ToJsonString());
            var e = Assert.Throws<LensException>(() => LensSweep.Validate(new SweepOptions
            {
                ModelDir = Model("if-tiny-b"), Prompt = "x", OutDir = CliRunner.TempPath("unused"), Stage2Dir = stage2,
            }));
            Assert.Contains(expected, e.Message);
        }
        finally { Directory.Delete(stage2, true); }
    }
}
