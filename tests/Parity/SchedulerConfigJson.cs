namespace DiffusionLens.Tests.Parity;

/// <summary>The published scheduler/scheduler_config.json files the scheduler tests build from.</summary>
internal static class SchedulerConfigJson
{
    /// <summary>Stable Diffusion 1.5's (clip_sample is a stray key diffusers ignores for PNDM).</summary>
    public const string Sd15 = """
        {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
         "steps_offset": 1, "trained_betas": null, "clip_sample": false}
        """;

    /// <summary>DeepFloyd IF-I's.</summary>
    public const string IfI = """
        {"_class_name": "DDPMScheduler", "_diffusers_version": "0.16.0", "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
         "beta_start": 0.0001, "clip_sample": true, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.95,
         "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.5, "thresholding": true,
         "trained_betas": null, "variance_type": "learned_range"}
        """;
}
