using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// A DeepFloyd IF stage II folder built here: the UNet of fixtures/make_reference.py's "if2-tiny" (IF-II-L-like, for the
/// stage I if-tiny-b) with TorchSharp's random initialisation, the schedulers as scripts/convert_if.py makes IF-II's, and
/// no text encoder or tokenizer (null in model_index.json, as a stage II saved with text_encoder=None). For tests of the
/// stage II code paths that need no diffusers output; parity against diffusers uses the committed if2-tiny fixture.
/// </summary>
public static class Stage2Model
{
    /// <summary>make_reference.py IF2_CONFIGS["if2-tiny"]["unet"], as diffusers would save it.</summary>
    public const string UNetConfig = """
    {
      "_class_name": "UNet2DConditionModel",
      "sample_size": 48, "in_channels": 6, "out_channels": 6, "layers_per_block": [1, 1, 2],
      "block_out_channels": [16, 24, 32],
      "down_block_types": ["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
      "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
      "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"],
      "cross_attention_dim": 32, "encoder_hid_dim": 24, "encoder_hid_dim_type": "text_proj", "attention_head_dim": 8,
      "addition_embed_type": "text", "addition_embed_type_num_heads": 4, "cross_attention_norm": "group_norm",
      "resnet_time_scale_shift": "scale_shift", "act_fn": "gelu", "norm_num_groups": 8,
      "class_embed_type": "timestep", "num_class_embeds": null, "class_embeddings_concat": false,
      "time_embedding_dim": 32, "time_embedding_act_fn": "gelu", "resnet_skip_time_act": true,
      "resnet_out_scale_factor": 1.4142271248762552, "mid_block_scale_factor": 1.4142271248762552,
      "only_cross_attention": true, "mid_block_only_cross_attention": null
    }
    """;

    public const string ModelIndex = """
    {
      "_class_name": "IFSuperResolutionPipeline", "_diffusers_version": "0.40.0.dev0",
      "feature_extractor": [null, null], "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
      "requires_safety_checker": false, "safety_checker": [null, null], "scheduler": ["diffusers", "DDPMScheduler"],
      "text_encoder": [null, null], "tokenizer": [null, null], "unet": ["diffusers", "UNet2DConditionModel"],
      "watermarker": [null, null]
    }
    """;

    public const string Scheduler = """
    {
      "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
      "beta_start": 0.0001, "beta_end": 0.02, "thresholding": true, "dynamic_thresholding_ratio": 0.95,
      "sample_max_value": 1.0, "clip_sample": true, "clip_sample_range": 1.0, "prediction_type": "epsilon",
      "variance_type": "learned_range", "timestep_spacing": "leading", "steps_offset": 0
    }
    """;

    public const string ImageNoisingScheduler = """
    {
      "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
      "beta_start": 0.0001, "beta_end": 0.02, "variance_type": "fixed_small", "prediction_type": "epsilon"
    }
    """;

    /// <summary>
    /// Sets every parameter from a CPU generator seeded with <paramref name="seed"/> (norm weights 1 + small noise,
    /// everything else small noise scaled by 1/sqrt(fan-in)): defined values independent of what TorchSharp's module
    /// constructors leave in memory, the same on every run.
    /// </summary>
    public static void Randomize(TorchSharp.torch.nn.Module module, ulong seed)
    {
        var g = new Generator(seed);
        using var noGrad = torch.no_grad();
        foreach (var (name, p) in module.named_parameters())
        {
            using var noise = torch.randn(p.shape, dtype: p.dtype, generator: g);
            bool isNorm = name.Contains("norm", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal);
            double scale = p.ndim >= 2 ? 1.0 / Math.Sqrt(p.numel() / p.shape[0]) : 0.05;
            if (isNorm) p.copy_(noise * 0.05 + 1);
            else p.copy_(noise * scale);
        }
    }

    /// <summary>Writes a random-weight stage II folder (seeded: the same weights every time) and returns its path.</summary>
    public static string Build(string? unetConfig = null)
    {
        var dir = CliRunner.TempPath("stage2");
        Directory.CreateDirectory(Path.Combine(dir, "unet"));
        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        Directory.CreateDirectory(Path.Combine(dir, "image_noising_scheduler"));
        File.WriteAllText(Path.Combine(dir, "model_index.json"), ModelIndex);
        File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), Scheduler);
        File.WriteAllText(Path.Combine(dir, "image_noising_scheduler", "scheduler_config.json"), ImageNoisingScheduler);
        var cfgPath = Path.Combine(dir, "unet", "config.json");
        File.WriteAllText(cfgPath, unetConfig ?? UNetConfig);
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.Load(cfgPath));
        Randomize(unet, 2);
        SafetensorsFile.Write(Path.Combine(dir, "unet", "diffusion_pytorch_model.safetensors"), unet.state_dict());
        return dir;
    }
}
