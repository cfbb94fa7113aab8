using DiffusionLens.Sweep;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// FLUX's sweep options, checked before any weights load (on a config-only folder: any load would fail): lens layers
/// are T5's blocks 0..N-1 (hidden-state 0..N); --max-sequence-length is FLUX's alone (1..512) and the others reject it;
/// FLUX rejects what FluxPipeline has no use for (a negative prompt, --clean-caption, --lens-layer-norm), a scheduler
/// other than its flow-matching one, and a size that is not a multiple of twice the VAE scale factor; other pipelines
/// reject the flow-matching scheduler. The CLI reports each as a usage error (exit 2) without a stack trace.
/// </summary>
public class FluxOptionTests
{
    /// <summary>A config-only FLUX folder (the configs of <see cref="FluxModel"/>, no weights).</summary>
    private static string ConfigOnlyFlux()
    {
        var dir = CliRunner.TempPath("flux-configs");
        void Write(string rel, string json)
        {
            var path = Path.Combine(dir, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, json);
        }
        Write("model_index.json", """
        {"_class_name": "FluxPipeline", "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
         "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
         "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
        """);
        Write("text_encoder/config.json", FluxModel.ClipJson);
        Write("text_encoder_2/config.json", FluxModel.T5Json);
        Write("transformer/config.json", FluxModel.TransformerJson);
        Write("vae/config.json", FluxModel.VaeJson);
        Write("scheduler/scheduler_config.json", FluxModel.SchnellSchedulerJson);
        return dir;
    }

    private static SweepOptions Options(string model, string layers = "all", string numbering = "lens") => new()
    {
        ModelDir = model, Prompt = "a cat", OutDir = CliRunner.TempPath("flux-out"), Layers = layers, LayerNumbering = numbering,
    };

    private static string Fixture(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    [Fact]
    public void Lens_layers_are_the_T5_blocks()
    {
        var dir = ConfigOnlyFlux();
        try
        {
            LensSweep.Validate(Options(dir, "all"));
            LensSweep.Validate(Options(dir, "0,2"));
            var e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "3")));
            Assert.Contains("layer 3 is out of range", e.Message);
            LensSweep.Validate(Options(dir, "3", "hidden-state")); // k = L + 1: 0..N
            Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "4", "hidden-state")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Flux_rejects_what_its_pipeline_has_no_use_for()
    {
        var dir = ConfigOnlyFlux();
        try
        {
            LensSweep.Validate(Options(dir) with { MaxSequenceLength = 256, Height = 32, Width = 48, Steps = 4 });
            void Refused(SweepOptions o, string expected) =>
                Assert.Contains(expected, Assert.Throws<LensException>(() => LensSweep.Validate(o)).Message);
            Refused(Options(dir) with { MaxSequenceLength = 513 }, "--max-sequence-length must be between 1 and 512");
            Refused(Options(dir) with { MaxSequenceLength = 0 }, "--max-sequence-length must be between 1 and 512");
            Refused(Options(dir) with { NegativePrompt = "blurry" }, "--negative-prompt does not apply to FLUX");
            Refused(Options(dir) with { LensLayerNorm = true }, "--lens-layer-norm applies to Stable Diffusion XL");
            Refused(Options(dir) with { Scheduler = "euler" }, "FluxPipeline runs FlowMatchEulerDiscreteScheduler only");
            Refused(Options(dir) with { Height = 18, Width = 32 }, "multiples of 4 for FLUX");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("sd-tiny-12", "StableDiffusionPipeline")]
    [InlineData("if-tiny-a", "IFPipeline")]
    public void Other_pipelines_reject_flux_options(string model, string cls)
    {
        var e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(Fixture(model)) with { MaxSequenceLength = 64 }));
        Assert.Contains("--max-sequence-length applies to FLUX models (FluxPipeline) only", e.Message);
        Assert.Contains(cls, e.Message);
        e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(Fixture(model)) with { Scheduler = "FlowMatchEulerDiscreteScheduler" }));
        Assert.Contains("FlowMatchEulerDiscreteScheduler applies to FLUX models (FluxPipeline) only", e.Message);
    }

    [Theory]
    [InlineData("--max-sequence-length", "64", "sd-tiny-12", "--max-sequence-length applies to FLUX models")]
    [InlineData("--negative-prompt", "blurry", "flux", "--negative-prompt does not apply to FLUX")]
    [InlineData("--clean-caption", "false", "flux", "--clean-caption applies to DeepFloyd IF models only")]
    [InlineData("--scheduler", "ddim", "flux", "FluxPipeline runs FlowMatchEulerDiscreteScheduler only")]
    public void The_cli_reports_them_as_usage_errors(string option, string value, string model, string expected)
    {
        var dir = model == "flux" ? FluxModel.Write() : CliRunner.CopyModel(model);
        var outDir = CliRunner.TempPath("flux-opt");
        try
        {
            var r = CliRunner.Run("sweep", "--model", dir, "--prompt", "a cat", option, value, "--steps", "1", "--height", "16", "--width", "16", "--out", outDir);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(expected, r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(dir, true); }
    }
}
