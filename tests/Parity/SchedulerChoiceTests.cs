using DiffusionLens.Loading;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// DPMSolverMultistepScheduler, DDIMScheduler and EulerDiscreteScheduler without fixtures: names and aliases, building
/// from another class's config as diffusers' from_config does, clear errors for options not implemented, the shape of
/// the schedules, and the solvers' exactness on an exact noise prediction (a property of the math, not a number copied
/// from anywhere).
/// </summary>
public class SchedulerChoiceTests
{
    private const string Sd15 = SchedulerConfigJson.Sd15;

    private const string If = SchedulerConfigJson.IfI;

    private static DiffusersConfig Cfg(string json) => DiffusersConfig.FromJson(json, "scheduler_config.json");
    private static string With(string json, string extra) => json.TrimEnd().TrimEnd('}') + ", " + extra + "}";

    public static readonly string[] NewClasses = { "DPMSolverMultistepScheduler", "DDIMScheduler", "EulerDiscreteScheduler" };

    [Theory]
    [InlineData("dpm++", "DPMSolverMultistepScheduler")]
    [InlineData("ddim", "DDIMScheduler")]
    [InlineData("euler", "EulerDiscreteScheduler")]
    [InlineData("pndm", "PNDMScheduler")]
    [InlineData("ddpm", "DDPMScheduler")]
    [InlineData("DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler")]
    [InlineData("EulerDiscreteScheduler", "EulerDiscreteScheduler")]
    public void Names_and_aliases_resolve_to_the_diffusers_class(string name, string cls)
    {
        Assert.Equal(cls, Scheduler.ResolveClassName(name));
        using var s = Scheduler.FromConfig(Cfg(Sd15), name);
        Assert.Equal(cls, s.ClassName);
        Assert.Equal(cls, s.GetType().Name);
    }

    [Theory]
    [InlineData("dpm")]
    [InlineData("Euler")]
    [InlineData("LMSDiscreteScheduler")]
    [InlineData("")]
    public void Unknown_names_list_the_accepted_ones(string name)
    {
        var e = Assert.Throws<LensException>(() => Scheduler.ResolveClassName(name));
        Assert.Contains($"'{name}'", e.Message);
        foreach (var n in Scheduler.SupportedClassNames.Concat(Scheduler.Aliases.Keys)) Assert.Contains(n, e.Message);
        Assert.Throws<LensException>(() => Scheduler.FromConfig(Cfg(Sd15), name));
    }

    [Fact]
    public void The_config_own_class_is_used_without_a_choice()
    {
        using var s = Scheduler.FromConfig(Cfg(Sd15));
        Assert.IsType<PNDMScheduler>(s);
        using var d = Scheduler.FromConfig(Cfg(Sd15.Replace("PNDMScheduler", "DPMSolverMultistepScheduler")));
        Assert.IsType<DPMSolverMultistepScheduler>(d);
    }

    [Fact]
    public void From_another_class_config_file_keys_win_and_missing_keys_take_the_class_defaults()
    {
        // SD 1.5's file has no timestep_spacing: PNDM's default "leading" is not carried over (diffusers drops the keys in
        // _use_default_values), so each class takes its own default
        using var euler = Scheduler.FromConfig(Cfg(Sd15), "euler");
        Assert.Equal("linspace", euler.EffectiveConfig["timestep_spacing"]!.GetValue<string>());
        Assert.Equal(1, euler.EffectiveConfig["steps_offset"]!.GetValue<int>());
        Assert.Equal("scaled_linear", euler.EffectiveConfig["beta_schedule"]!.GetValue<string>());
        using var ddim = (DDIMScheduler)Scheduler.FromConfig(Cfg(Sd15), "ddim");
        Assert.Equal("leading", ddim.TimestepSpacing);
        Assert.False(ddim.SetAlphaToOne); // from the file (DDIM's default is true)
        Assert.False(ddim.ClipSample);    // from the file (DDIM's default is true)
        using var dpm = (DPMSolverMultistepScheduler)Scheduler.FromConfig(Cfg(Sd15), "dpm++");
        Assert.Equal(2, dpm.SolverOrder);
        Assert.Equal("dpmsolver++", dpm.AlgorithmType);
        Assert.Equal("linspace", dpm.TimestepSpacing);
        // keys the class does not take are ignored, not recorded
        Assert.False(dpm.EffectiveConfig.ContainsKey("skip_prk_steps"));
        Assert.False(ddim.EffectiveConfig.ContainsKey("skip_prk_steps"));
        // the IF file's thresholding settings carry over to DPM-Solver++ and DDIM
        using var ifDpm = (DPMSolverMultistepScheduler)Scheduler.FromConfig(Cfg(If), "dpm++");
        Assert.True(ifDpm.Thresholding);
        Assert.Equal(1.5, ifDpm.SampleMaxValue);
        Assert.Equal("learned_range", ifDpm.VarianceType);
    }

    [Theory]
    [InlineData("DPMSolverMultistepScheduler", "\"use_karras_sigmas\": true", "use_karras_sigmas")]
    [InlineData("DPMSolverMultistepScheduler", "\"use_exponential_sigmas\": true", "use_exponential_sigmas")]
    [InlineData("DPMSolverMultistepScheduler", "\"use_beta_sigmas\": true", "use_beta_sigmas")]
    [InlineData("DPMSolverMultistepScheduler", "\"use_lu_lambdas\": true", "use_lu_lambdas")]
    [InlineData("DPMSolverMultistepScheduler", "\"use_flow_sigmas\": true", "use_flow_sigmas")]
    [InlineData("DPMSolverMultistepScheduler", "\"algorithm_type\": \"dpmsolver\"", "dpmsolver")]
    [InlineData("DPMSolverMultistepScheduler", "\"algorithm_type\": \"sde-dpmsolver\"", "sde-dpmsolver")]
    [InlineData("DPMSolverMultistepScheduler", "\"solver_order\": 4", "solver_order")]
    [InlineData("DPMSolverMultistepScheduler", "\"solver_type\": \"wobbly\"", "wobbly")]
    [InlineData("DPMSolverMultistepScheduler", "\"prediction_type\": \"flow_prediction\"", "flow_prediction")]
    [InlineData("DPMSolverMultistepScheduler", "\"final_sigmas_type\": \"one\"", "final_sigmas_type")]
    [InlineData("DPMSolverMultistepScheduler", "\"timestep_spacing\": \"karras\"", "karras")]
    [InlineData("EulerDiscreteScheduler", "\"use_karras_sigmas\": true", "use_karras_sigmas")]
    [InlineData("EulerDiscreteScheduler", "\"interpolation_type\": \"log_linear\"", "log_linear")]
    [InlineData("EulerDiscreteScheduler", "\"prediction_type\": \"v_prediction\", \"timestep_type\": \"continuous\"", "timestep_type")]
    [InlineData("EulerDiscreteScheduler", "\"beta_schedule\": \"sigmoid\"", "sigmoid")]
    [InlineData("DDIMScheduler", "\"prediction_type\": \"flow_prediction\"", "flow_prediction")]
    [InlineData("DDIMScheduler", "\"timestep_spacing\": \"karras\"", "karras")]
    public void Options_not_implemented_fail_naming_the_key_or_value(string cls, string extra, string named)
    {
        var json = With(Sd15.Replace("\"beta_schedule\": \"scaled_linear\",", extra.Contains("beta_schedule") ? "" : "\"beta_schedule\": \"scaled_linear\","), extra);
        var e = Assert.Throws<LensException>(() => Scheduler.FromConfig(Cfg(json), cls));
        Assert.Contains(named, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Diffusers_renamed_option_values_are_taken_as_diffusers_takes_them()
    {
        using var deis = (DPMSolverMultistepScheduler)Scheduler.FromConfig(Cfg(With(Sd15, "\"algorithm_type\": \"deis\", \"solver_type\": \"bh2\"")), "dpm++");
        Assert.Equal("dpmsolver++", deis.AlgorithmType);
        Assert.Equal("midpoint", deis.SolverType);
        Assert.Equal("dpmsolver++", deis.EffectiveConfig["algorithm_type"]!.GetValue<string>());
    }

    public static TheoryData<string, string, int> Schedules()
    {
        var d = new TheoryData<string, string, int>();
        foreach (var cls in NewClasses)
        foreach (var spacing in new[] { "linspace", "leading", "trailing" })
        foreach (var steps in new[] { 1, 2, 3, 10, 25, 50, 100 })
            d.Add(cls, spacing, steps);
        return d;
    }

    [Theory, MemberData(nameof(Schedules))]
    public void Timesteps_are_the_requested_count_strictly_descending_and_in_range(string cls, string spacing, int steps)
    {
        using var s = Scheduler.FromConfig(Cfg(With(Sd15, $"\"timestep_spacing\": \"{spacing}\"")), cls);
        s.SetTimesteps(steps);
        Assert.Equal(steps, s.Timesteps.Length);
        Assert.Equal(steps, s.TimestepValues.Length);
        Assert.Equal(steps, s.NumInferenceSteps);
        for (int i = 1; i < steps; i++)
        {
            Assert.True(s.TimestepValues[i] < s.TimestepValues[i - 1], $"{cls}/{spacing}/{steps}: not descending at {i}");
            Assert.True(s.Timesteps[i] < s.Timesteps[i - 1], $"{cls}/{spacing}/{steps}: keys not distinct at {i}");
        }
        Assert.All(s.TimestepValues, t => Assert.InRange(t, 0, 999));
        Assert.Equal(s.TimestepValues.Select(t => (long)Math.Floor(t)), s.Timesteps);
        if (s is EulerDiscreteScheduler e)
        {
            Assert.Equal(steps + 1, (int)e.Sigmas.shape[0]);
            Assert.Equal(0f, e.Sigmas[-1].item<float>());
        }
        if (s is DPMSolverMultistepScheduler d)
        {
            Assert.Equal(steps + 1, (int)d.Sigmas!.shape[0]);
            Assert.Equal(0f, d.Sigmas[-1].item<float>());
        }
    }

    [Fact]
    public void Euler_linspace_timesteps_are_fractional_float32_and_init_sigma_follows_the_spacing()
    {
        using var s = (EulerDiscreteScheduler)Scheduler.FromConfig(Cfg(Sd15), "euler");
        s.SetTimesteps(25);
        Assert.Equal(ScalarType.Float32, s.TimestepDType);
        Assert.Equal(999.0, s.TimestepValues[0]);
        Assert.Equal(0.0, s.TimestepValues[^1]);
        Assert.Contains(s.TimestepValues, t => t != Math.Floor(t));
        Assert.All(s.TimestepValues, t => Assert.Equal(t, (double)(float)t));
        // linspace/trailing: init_noise_sigma = max sigma; leading: (max**2 + 1) ** 0.5 — both far above 1 for SD
        Assert.Equal(s.Sigmas.max().item<float>(), (float)s.InitNoiseSigma);
        using var lead = (EulerDiscreteScheduler)Scheduler.FromConfig(Cfg(With(Sd15, "\"timestep_spacing\": \"leading\"")), "euler");
        lead.SetTimesteps(25);
        double max = lead.Sigmas.max().item<float>();
        Assert.Equal(Math.Sqrt(max * max + 1), lead.InitNoiseSigma, 1e-5 * max);
        Assert.True(lead.InitNoiseSigma > 10);
        // scale_model_input divides by (sigma**2 + 1) ** 0.5 of the current step
        using var x = torch.ones(1, 4, 2, 2);
        using var scaled = lead.ScaleModelInput(x, lead.Timesteps[0]);
        Assert.Equal(1 / Math.Sqrt(max * max + 1), scaled[0, 0, 0, 0].item<float>(), 1e-6);
    }

    [Fact]
    public void Pipelines_need_scale_model_input_only_for_euler()
    {
        foreach (var cls in NewClasses)
        {
            using var s = Scheduler.FromConfig(Cfg(Sd15), cls);
            s.SetTimesteps(5);
            using var x = torch.randn(1, 4, 2, 2);
            var scaled = s.ScaleModelInput(x, s.Timesteps[0]);
            if (cls == "EulerDiscreteScheduler") Assert.False(ReferenceData.Identical(scaled, x));
            else { Assert.Same(x, scaled); Assert.Equal(1.0, s.InitNoiseSigma); }
        }
    }

    public static TheoryData<string, string> ExactCases() => new()
    {
        { "DPMSolverMultistepScheduler", "" },
        { "DPMSolverMultistepScheduler", "\"solver_order\": 1" },
        { "DPMSolverMultistepScheduler", "\"solver_order\": 3" },
        { "DPMSolverMultistepScheduler", "\"solver_order\": 3, \"solver_type\": \"heun\", \"lower_order_final\": false" },
        { "DPMSolverMultistepScheduler", "\"timestep_spacing\": \"trailing\", \"final_sigmas_type\": \"sigma_min\"" },
        { "DDIMScheduler", "set_alpha_to_one" },
        { "EulerDiscreteScheduler", "" },
        { "EulerDiscreteScheduler", "\"timestep_spacing\": \"leading\"" },
    };

    /// <summary>
    /// With the model predicting the exact noise eps of x_t = x0 + noise (in each scheduler's own parametrisation), every
    /// step of DPM-Solver++ (any order: the x0 predictions agree, so the differences vanish), DDIM and Euler lands exactly
    /// on the same x0 and eps at the next noise level, so the last step returns x0 (the final sigma 0 / alpha 1) or x0
    /// noised to the final sigma.
    /// </summary>
    [Theory, MemberData(nameof(ExactCases))]
    public void An_exact_noise_prediction_is_followed_exactly(string cls, string extra)
    {
        var json = extra == "" ? Sd15
            : extra == "set_alpha_to_one" ? Sd15.Replace("\"set_alpha_to_one\": false", "\"set_alpha_to_one\": true")
            : With(Sd15, extra);
        using var s = Scheduler.FromConfig(Cfg(json), cls);
        s.SetTimesteps(12);
        var gen = new torch.Generator(5, torch.CPU);
        using var scope = NewDisposeScope();
        var x0 = torch.rand(new long[] { 2, 4, 4, 4 }, generator: gen) * 2 - 1;
        var eps = torch.randn(new long[] { 2, 4, 4, 4 }, generator: gen);
        Tensor x;
        Tensor expectedEnd;
        if (s is EulerDiscreteScheduler e)
        {
            // k-diffusion space: x = x0 + sigma * eps
            x = x0 + e.Sigmas[0] * eps;
            expectedEnd = x0 + e.Sigmas[-1] * eps;
        }
        else if (s is DPMSolverMultistepScheduler d)
        {
            // x = alpha x0 + sigma_t eps with alpha = 1 / sqrt(sigma**2 + 1), sigma_t = sigma * alpha
            Tensor Noised(Tensor sigma) { var a = (sigma.pow(2) + 1).pow(0.5).reciprocal(); return a * x0 + sigma * a * eps; }
            x = Noised(d.Sigmas![0]);
            expectedEnd = Noised(d.Sigmas[-1]);
        }
        else
        {
            var a = s.AlphasCumprod[s.Timesteps[0]];
            x = a.sqrt() * x0 + (1 - a).sqrt() * eps;
            expectedEnd = x0; // set_alpha_to_one: the last step lands on alpha 1
        }
        for (int i = 0; i < s.Timesteps.Length; i++)
        {
            var input = s.ScaleModelInput(x, s.Timesteps[i]);
            Assert.Equal(x.shape, input.shape);
            x = s.Step(eps, s.Timesteps[i], x);
        }
        double diff = (x - expectedEnd).abs().max().item<float>();
        Assert.True(diff < 2e-4, $"{cls} {extra}: max diff {diff} from the exact end point");
    }

    [Fact]
    public void Dpm_solver_learned_range_takes_the_first_three_channels_and_sde_draws_one_noise_a_step()
    {
        using var s = Scheduler.FromConfig(Cfg(If), "dpm++");
        s.SetTimesteps(5);
        var gen = new torch.Generator(9, torch.CPU);
        using var scope = NewDisposeScope();
        var sample = torch.randn(new long[] { 1, 3, 4, 4 }, generator: gen);
        var eps = torch.randn(new long[] { 1, 3, 4, 4 }, generator: gen);
        var withVariance = torch.cat(new[] { eps, torch.rand(new long[] { 1, 3, 4, 4 }, generator: gen) }, 1);
        var a = s.Step(withVariance, s.Timesteps[0], sample);
        using var s2 = Scheduler.FromConfig(Cfg(If.Replace("\"variance_type\": \"learned_range\"", "\"variance_type\": \"learned\"")), "dpm++");
        s2.SetTimesteps(5);
        var b = s2.Step(torch.cat(new[] { eps, torch.zeros_like(eps) }, 1), s2.Timesteps[0], sample);
        Assert.Equal(sample.shape, a.shape);
        Assert.True(ReferenceData.Identical(a, b), "the predicted variance channels must not change the step");

        using var sde = Scheduler.FromConfig(Cfg(With(Sd15, "\"algorithm_type\": \"sde-dpmsolver++\"")), "dpm++");
        sde.SetTimesteps(5);
        var g1 = new torch.Generator(77, torch.CPU);
        var latents = torch.randn(new long[] { 2, 4, 4, 4 }, generator: gen);
        sde.Step(latents * 0.1, sde.Timesteps[0], latents, g1);
        var after = torch.randn(new long[] { 3 }, generator: g1);
        var g2 = new torch.Generator(77, torch.CPU);
        torch.randn(new long[] { 2, 4, 4, 4 }, generator: g2);
        Assert.True(ReferenceData.Identical(after, torch.randn(new long[] { 3 }, generator: g2)), "one randn of the sample's shape a step");
    }

    [Theory]
    [InlineData("DDIMScheduler")]
    [InlineData("EulerDiscreteScheduler")]
    public void A_model_output_with_the_predicted_variance_is_refused_clearly(string cls)
    {
        using var s = Scheduler.FromConfig(Cfg(If), cls);
        s.SetTimesteps(5);
        using var sample = torch.zeros(1, 3, 4, 4);
        using var mo = torch.zeros(1, 6, 4, 4);
        s.ScaleModelInput(sample, s.Timesteps[0]);
        var e = Assert.Throws<LensException>(() => s.Step(mo, s.Timesteps[0], sample));
        Assert.Contains("variance", e.Message);
    }

    [Fact]
    public void Rescale_betas_zero_snr_gives_zero_terminal_snr()
    {
        using var s = Scheduler.FromConfig(Cfg(With(Sd15, "\"rescale_betas_zero_snr\": true")), "ddim");
        Assert.Equal(0f, s.AlphasCumprod[-1].item<float>(), 1e-7f);
        using var plain = Scheduler.FromConfig(Cfg(Sd15), "ddim");
        Assert.Equal(plain.AlphasCumprod[0].item<float>(), s.AlphasCumprod[0].item<float>(), 1e-6f); // the first stays
        // Euler / DPM-Solver: alphas_cumprod[-1] = 2**-24 so the first sigma is finite
        using var euler = (EulerDiscreteScheduler)Scheduler.FromConfig(Cfg(With(Sd15, "\"rescale_betas_zero_snr\": true, \"timestep_spacing\": \"trailing\"")), "euler");
        Assert.Equal((float)Math.Pow(2, -24), euler.AlphasCumprod[-1].item<float>());
        euler.SetTimesteps(10);
        Assert.True(float.IsFinite(euler.Sigmas[0].item<float>()));
    }
}
