using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// A random-weight FLUX pipeline folder written from C# (no diffusers involved): the tokenizers of the tiny fixtures
/// (CLIP from sd-tiny-12, T5 from if-tiny-a), a 2-layer CLIPTextModel, a 3-block T5 encoder, a FluxTransformer2DModel
/// with one double- and one single-stream block (16-channel latents packed to 64), a 16-latent-channel VAE without
/// quant convs and with a shift_factor, and FLUX.1-schnell's scheduler config. Sizes are tiny so CPU sweeps are fast.
/// </summary>
internal static class FluxModel
{
    public const string TransformerJson = """
    {"_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "out_channels": null, "num_layers": 1,
     "num_single_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 8,
     "pooled_projection_dim": 8, "guidance_embeds": false, "axes_dims_rope": [2, 2, 4]}
    """;
    public const string ClipJson = """{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_act": "quick_gelu", "eos_token_id": 2}""";
    public const string T5Json = """
    {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 3, "num_heads": 2, "feed_forward_proj": "gated-gelu",
     "dense_act_fn": "gelu_new", "is_gated_act": true, "layer_norm_epsilon": 1e-6, "vocab_size": 32128,
     "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
    """;
    public const string VaeJson = """
    {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
     "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "latent_channels": 16, "norm_num_groups": 8,
     "layers_per_block": 1, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": false,
     "use_post_quant_conv": false, "force_upcast": true}
    """;
    /// <summary>FLUX.1-schnell's scheduler/scheduler_config.json.</summary>
    public const string SchnellSchedulerJson = """
    {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
     "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": false}
    """;
    /// <summary>FLUX.1-dev's scheduler config (dynamic shifting).</summary>
    public const string DevSchedulerJson = """
    {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
     "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": true}
    """;

    /// <summary>Writes the folder (a new temporary path) and returns it; the caller deletes it.</summary>
    public static string Write(string transformerJson = TransformerJson, string schedulerJson = SchnellSchedulerJson)
    {
        var dir = CliRunner.TempPath("flux-random");
        var models = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
        {"_class_name": "FluxPipeline", "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
         "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
         "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "image_encoder": [null, null], "feature_extractor": [null, null]}
        """);
        RandomFolder.CopyDir(Path.Combine(models, "sd-tiny-12", "tokenizer"), Path.Combine(dir, "tokenizer"));
        RandomFolder.CopyDir(Path.Combine(models, "if-tiny-a", "tokenizer"), Path.Combine(dir, "tokenizer_2"));
        using (var m = new ClipTextModel(ClipTextConfig.FromConfig(DiffusersConfig.FromJson(ClipJson)))) RandomFolder.Component(m, 1, 0.3, Path.Combine(dir, "text_encoder"), "model.safetensors", ClipJson);
        using (var m = new T5EncoderModel(T5Config.FromConfig(DiffusersConfig.FromJson(T5Json)))) RandomFolder.Component(m, 2, 0.3, Path.Combine(dir, "text_encoder_2"), "model.safetensors", T5Json);
        using (var m = FluxTransformer2DModel.FromConfig(DiffusersConfig.FromJson(transformerJson))) RandomFolder.Component(m, 3, 0.3, Path.Combine(dir, "transformer"), "diffusion_pytorch_model.safetensors", transformerJson);
        using (var m = AutoencoderKL.FromConfig(DiffusersConfig.FromJson(VaeJson))) RandomFolder.Component(m, 4, 0.3, Path.Combine(dir, "vae"), "diffusion_pytorch_model.safetensors", VaeJson);
        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), schedulerJson);
        return dir;
    }
}
