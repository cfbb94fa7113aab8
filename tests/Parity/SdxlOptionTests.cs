using System.Text.Json.Nodes;
using DiffusionLens.Sweep;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// SDXL's sweep options, checked before any weights load: lens layers 0..N-2 of text_encoder_2 (the tutorial's
/// range(0, num_hidden_layers - 1)), in either numbering; <c>--lens-layer-norm on|off</c> is SDXL's alone (SD and IF
/// reject it as a usage error, exit 2). The SDXL folder here holds configs only (no weights), so any load would fail.
/// </summary>
public class SdxlOptionTests
{
    /// <summary>stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json.</summary>
    private const string SdxlScheduler = """
    {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
     "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
     "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
     "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false}
    """;

    /// <summary>A config-only SDXL folder whose text_encoder_2 has <paramref name="layers2"/> layers.</summary>
    private static string ConfigOnlySdxl(int layers2)
    {
        var dir = CliRunner.TempPath("sdxl-configs");
        void Write(string rel, string json)
        {
            var path = Path.Combine(dir, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, json);
        }
        Write("model_index.json", """
        {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true,
         "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
        """);
        Write("text_encoder/config.json", """{"hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32}""");
        Write("text_encoder_2/config.json", new JsonObject
        {
            ["hidden_size"] = 24, ["num_hidden_layers"] = layers2, ["num_attention_heads"] = 2, ["intermediate_size"] = 48,
            ["projection_dim"] = 8,
        }.ToJsonString());
        Write("unet/config.json", SdxlUnitTests.TinySdxlUnet);
        Write("vae/config.json", """{"block_out_channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8}""");
        Write("scheduler/scheduler_config.json", SdxlScheduler);
        return dir;
    }

    private static SweepOptions Options(string model, string layers, string numbering = "lens", bool? layerNorm = null) => new()
    {
        ModelDir = model, Prompt = "a cat", OutDir = CliRunner.TempPath("sdxl-out"), Layers = layers,
        LayerNumbering = numbering, LensLayerNorm = layerNorm,
    };

    [Fact]
    public void Lens_layers_are_zero_to_N_minus_two_of_text_encoder_2()
    {
        var dir = ConfigOnlySdxl(layers2: 5);
        try
        {
            LensSweep.Validate(Options(dir, "all"));
            LensSweep.Validate(Options(dir, "0,3", layerNorm: false));
            var e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "4")));
            Assert.Contains("layer 4 is out of range", e.Message);
            Assert.Contains("4 layers (0..3)", e.Message);
            // hidden-state numbering: k = L + 1, so 0..N-1
            LensSweep.Validate(Options(dir, "4", "hidden-state"));
            Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "5", "hidden-state")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void A_text_encoder_2_of_one_layer_has_no_lens_layer()
    {
        var dir = ConfigOnlySdxl(layers2: 1);
        try
        {
            var e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "all")));
            Assert.Contains("at least 2 layers", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("sd-tiny-12", "StableDiffusionPipeline")]
    [InlineData("if-tiny-a", "IFPipeline")]
    public void Other_pipelines_reject_the_lens_layer_norm_option(string model, string cls)
    {
        var dir = Path.Combine(DiffusionLens.Testing.ReferenceData.RepoRoot, "fixtures", "models", model);
        var e = Assert.Throws<LensException>(() => LensSweep.Validate(Options(dir, "all", layerNorm: true)));
        Assert.Contains("--lens-layer-norm", e.Message);
        Assert.Contains(cls, e.Message);
    }

    [Theory]
    [InlineData("sd-tiny-12", "off", "--lens-layer-norm applies to Stable Diffusion XL")]
    [InlineData("if-tiny-a", "on", "--lens-layer-norm applies to Stable Diffusion XL")]
    [InlineData("sd-tiny-12", "maybe", "--lens-layer-norm must be on or off")]
    public void The_cli_rejects_the_option_as_a_usage_error_before_loading(string model, string value, string expected)
    {
        var dir = CliRunner.CopyModel(model);
        foreach (var f in Directory.GetFiles(dir, "*.safetensors", SearchOption.AllDirectories))
            File.WriteAllBytes(f, new byte[] { 0xde, 0xad, 0xbe, 0xef });
        var outDir = CliRunner.TempPath("sdxl-opt");
        try
        {
            var r = CliRunner.Run("sweep", "--model", dir, "--prompt", "a cat", "--lens-layer-norm", value, "--out", outDir);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(expected, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(dir, true); }
    }
}
