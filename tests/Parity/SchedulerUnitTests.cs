using DiffusionLens.Loading;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Behavioural checks of the PNDM and DDPM schedulers that need no fixtures. The expected timestep lists were
/// derived from diffusers' set_timesteps code (schedulers/scheduling_pndm.py, scheduling_ddpm.py); the reasoning is
/// spelled out for the Stable Diffusion case.
/// </summary>
public class SchedulerUnitTests
{
    private const string SdPndmJson = SchedulerConfigJson.Sd15;

    private const string IfDdpmJson = SchedulerConfigJson.IfI;

    private static Scheduler FromJson(string json) => Scheduler.FromConfig(DiffusersConfig.FromJson(json));

    private static string With(string json, string extra) => json.TrimEnd().TrimEnd('}') + ", " + extra + "}";

    [Fact]
    public void Pndm_sd_50_steps_gives_51_timesteps_with_the_repeated_entry()
    {
        // timestep_spacing defaults to "leading": step_ratio = 1000 // 50 = 20, so
        // _timesteps = arange(0, 50) * 20 + steps_offset(1) = [1, 21, ..., 961, 981].
        // skip_prk_steps: plms = concat([_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:]])[::-1]
        //               = reverse([1, 21, ..., 961] + [961] + [981]) = [981, 961, 961, 941, ..., 21, 1]:
        // 51 entries, the first 981, the second-to-last training timestep 961 twice (indices 1 and 2), the last 1.
        using var s = FromJson(SdPndmJson);
        var pndm = Assert.IsType<PNDMScheduler>(s);
        s.SetTimesteps(50);
        Assert.Equal(51, s.Timesteps.Length);
        Assert.Equal(981, s.Timesteps[0]);
        Assert.Equal(961, s.Timesteps[1]);
        Assert.Equal(961, s.Timesteps[2]);
        Assert.Equal(941, s.Timesteps[3]);
        Assert.Equal(1, s.Timesteps[^1]);
        var expectedTail = Enumerable.Range(0, 49).Select(i => 961L - 20 * i).ToArray(); // 961, 941, ..., 1
        Assert.Equal(expectedTail, s.Timesteps.Skip(2).ToArray());
        Assert.Empty(pndm.PrkTimesteps);
        Assert.Equal(1.0, s.InitNoiseSigma);
    }

    [Fact]
    public void Pndm_prk_path_timesteps()
    {
        // skip_prk_steps=false: prk = (repeat(_ts[-4:], 2) + tile([0, 1000 // 50 // 2], 4))[:-1].repeat(2)[1:-1][::-1]
        // = [981, 971, 971, 961, 961, 951, 951, 941, 941, 931, 931, 921], then plms = _ts[:-3][::-1] = [921, 901, ..., 1]
        using var s = FromJson(SdPndmJson.Replace("\"skip_prk_steps\": true", "\"skip_prk_steps\": false"));
        s.SetTimesteps(50);
        var pndm = (PNDMScheduler)s;
        Assert.Equal(new long[] { 981, 971, 971, 961, 961, 951, 951, 941, 941, 931, 931, 921 }, pndm.PrkTimesteps);
        Assert.Equal(47, pndm.PlmsTimesteps.Length);
        Assert.Equal(921, pndm.PlmsTimesteps[0]);
        Assert.Equal(1, pndm.PlmsTimesteps[^1]);
        Assert.Equal(59, s.Timesteps.Length);
    }

    // expected lists produced by running diffusers' own set_timesteps code (numpy) for these settings
    [Theory]
    [InlineData("PNDMScheduler", "linspace", 0, 10, true, new long[] { 999, 888, 888, 777, 666, 555, 444, 333, 222, 111, 0 })]
    [InlineData("PNDMScheduler", "trailing", 0, 7, true, new long[] { 999, 856, 856, 713, 570, 428, 285, 142 })]
    [InlineData("PNDMScheduler", "trailing", 1, 13, false, new long[] { 999, 960, 960, 922, 922, 883, 883, 845, 845, 806, 806, 768, 768, 691, 614, 537, 461, 384, 307, 230, 153, 76 })]
    [InlineData("PNDMScheduler", "linspace", 0, 7, false, new long[] { 999, 903, 903, 832, 832, 737, 737, 666, 666, 571, 571, 500, 500, 333, 166, 0 })]
    [InlineData("PNDMScheduler", "leading", 0, 4, false, new long[] { 750, 625, 625, 500, 500, 375, 375, 250, 250, 125, 125, 0, 0 })]
    [InlineData("PNDMScheduler", "leading", 0, 1, true, new long[] { 0 })]
    [InlineData("DDPMScheduler", "leading", 0, 10, false, new long[] { 900, 800, 700, 600, 500, 400, 300, 200, 100, 0 })]
    [InlineData("DDPMScheduler", "linspace", 0, 13, false, new long[] { 999, 916, 832, 749, 666, 583, 500, 416, 333, 250, 166, 83, 0 })]
    [InlineData("DDPMScheduler", "trailing", 0, 7, false, new long[] { 999, 856, 713, 570, 428, 285, 142 })]
    [InlineData("DDPMScheduler", "trailing", 1, 3, false, new long[] { 999, 666, 332 })]
    [InlineData("DDPMScheduler", "leading", 1, 7, false, new long[] { 853, 711, 569, 427, 285, 143, 1 })]
    public void Timestep_spacings_match_diffusers(string cls, string spacing, int offset, int steps, bool skipPrk, long[] expected)
    {
        var json = $$"""{"_class_name": "{{cls}}", "timestep_spacing": "{{spacing}}", "steps_offset": {{offset}}, "skip_prk_steps": {{(skipPrk ? "true" : "false")}}}""";
        using var s = FromJson(json);
        s.SetTimesteps(steps);
        Assert.Equal(expected, s.Timesteps);
    }

    [Fact]
    public void Unknown_scheduler_class_is_named_with_the_supported_ones()
    {
        var e = Assert.Throws<LensException>(() => FromJson("""{"_class_name": "LMSDiscreteScheduler"}"""));
        Assert.Contains("LMSDiscreteScheduler", e.Message);
        foreach (var name in Scheduler.SupportedClassNames) Assert.Contains(name, e.Message);
        var e2 = Assert.Throws<LensException>(() => FromJson("""{"beta_schedule": "linear"}"""));
        Assert.Contains("_class_name", e2.Message);
    }

    [Fact]
    public void Unsupported_option_values_are_named()
    {
        var e1 = Assert.Throws<LensException>(() => FromJson(With(IfDdpmJson, "\"variance_type\": \"wobbly\"").Replace("\"variance_type\": \"learned_range\",", "")));
        Assert.Contains("wobbly", e1.Message);
        var e2 = Assert.Throws<LensException>(() => FromJson(SdPndmJson.Replace("scaled_linear", "sigmoid")));
        Assert.Contains("sigmoid", e2.Message);
        var e3 = Assert.Throws<LensException>(() => FromJson(With(SdPndmJson, "\"prediction_type\": \"sample\"")));
        Assert.Contains("sample", e3.Message);
        var e4 = Assert.Throws<LensException>(() => FromJson(With(IfDdpmJson, "\"rescale_betas_zero_snr\": true")));
        Assert.Contains("rescale_betas_zero_snr", e4.Message);
        var e5 = Assert.Throws<LensException>(() => FromJson(With(SdPndmJson, "\"timestep_spacing\": \"karras\"")));
        Assert.Contains("karras", e5.Message);
    }

    [Fact]
    public void Beta_schedules()
    {
        using var sd = FromJson(SdPndmJson);
        // scaled_linear: linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2 in float32
        Assert.Equal(0.00085, sd.Betas[0].item<float>(), 1e-9);
        Assert.Equal(0.012, sd.Betas[999].item<float>(), 1e-8);
        Assert.Equal(ScalarType.Float32, sd.AlphasCumprod.dtype);
        Assert.Equal(1f - sd.Betas[0].item<float>(), sd.AlphasCumprod[0].item<float>());
        Assert.Equal(sd.AlphasCumprod[0].item<float>() * (1f - sd.Betas[1].item<float>()), sd.AlphasCumprod[1].item<float>());

        using var ifs = FromJson(IfDdpmJson);
        // squaredcos_cap_v2: beta_i = min(1 - abar((i+1)/N) / abar(i/N), 0.999), abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        Assert.Equal((float)(1 - AlphaBar(0.001) / AlphaBar(0.0)), ifs.Betas[0].item<float>());
        Assert.Equal(0.999f, ifs.Betas[999].item<float>()); // capped at max_beta
        Assert.True(ifs.AlphasCumprod[999].item<float>() < 1e-4);
    }

    [Fact]
    public void Pndm_with_exact_noise_follows_the_forward_process()
    {
        // With model_output = the exact noise eps of x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, every PLMS combination
        // of a constant eps is eps again, and formula (9) maps x_t exactly onto x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.
        // The repeated timestep re-does the first step from the kept sample, so step i lands on Timesteps[i + 1];
        // the last step (t = 1, prev = -19 < 0) uses final_alpha_cumprod = alphas_cumprod[0] (set_alpha_to_one = false).
        using var s = FromJson(SdPndmJson);
        s.SetTimesteps(50);
        var gen = new torch.Generator(42, torch.CPU);
        using var x0 = torch.rand(new long[] { 1, 4, 8, 8 }, generator: gen) * 2 - 1;
        using var eps = torch.randn(new long[] { 1, 4, 8, 8 }, generator: gen);
        Tensor At(long t) => t >= 0 ? s.AlphasCumprod[t] : s.AlphasCumprod[0];
        Tensor Noised(long t) => At(t).sqrt() * x0 + (1 - At(t)).sqrt() * eps;
        var sample = Noised(s.Timesteps[0]);
        for (int i = 0; i < s.Timesteps.Length; i++)
        {
            var prev = s.Step(eps, s.Timesteps[i], sample);
            long target = i + 1 < s.Timesteps.Length ? s.Timesteps[i + 1] : -1;
            using var expected = Noised(target);
            double diff = (prev - expected).abs().max().item<float>();
            Assert.True(diff < 2e-4, $"step {i} (t={s.Timesteps[i]}): max diff {diff}");
            sample = prev;
        }
        Assert.Equal(51, ((PNDMScheduler)s).Counter);
    }

    [Fact]
    public void Ddpm_if_timesteps_and_previous_timestep()
    {
        using var s = (DDPMScheduler)FromJson(IfDdpmJson);
        s.SetTimesteps(100);
        Assert.Equal(100, s.Timesteps.Length);
        Assert.Equal(990, s.Timesteps[0]);
        Assert.Equal(0, s.Timesteps[^1]);
        Assert.Equal(980, s.PreviousTimestep(990));
        Assert.Equal(-1, s.PreviousTimestep(0));
        s.SetTimesteps(new long[] { 999, 500, 3 });
        Assert.Equal(500, s.PreviousTimestep(999));
        Assert.Equal(-1, s.PreviousTimestep(3));
        Assert.Throws<LensException>(() => s.SetTimesteps(new long[] { 3, 500 }));
    }

    [Fact]
    public void Ddpm_learned_range_splits_the_output_and_draws_one_noise_of_the_sample_shape()
    {
        using var s = FromJson(IfDdpmJson);
        s.SetTimesteps(10);
        using var inputs = new torch.Generator(7, torch.CPU);
        using var sample = torch.randn(new long[] { 2, 3, 8, 8 }, generator: inputs);
        using var modelOutput = torch.randn(new long[] { 2, 6, 8, 8 }, generator: inputs); // (eps, predicted variance)

        using var g1 = new torch.Generator(1234, torch.CPU);
        using var prev = s.Step(modelOutput, s.Timesteps[0], sample, g1);
        Assert.Equal(sample.shape, prev.shape);
        using var after1 = torch.randn(new long[] { 5 }, generator: g1);

        // diffusers: randn_tensor(model_output.shape) AFTER the split, i.e. one draw of the sample's shape
        using var g2 = new torch.Generator(1234, torch.CPU);
        using var noise = torch.randn(new long[] { 2, 3, 8, 8 }, generator: g2);
        using var after2 = torch.randn(new long[] { 5 }, generator: g2);
        Assert.True(after1.eq(after2).all().item<bool>(), "the step must consume exactly one randn of the sample's shape");

        // same seed -> same result; another seed -> another result
        using var g3 = new torch.Generator(1234, torch.CPU);
        using var again = s.Step(modelOutput, s.Timesteps[0], sample, g3);
        Assert.True(again.eq(prev).all().item<bool>());
        using var g4 = new torch.Generator(99, torch.CPU);
        using var other = s.Step(modelOutput, s.Timesteps[0], sample, g4);
        Assert.False(other.eq(prev).all().item<bool>());

        // t = 0 adds no noise and draws nothing
        using var g5 = new torch.Generator(1234, torch.CPU);
        using var last = s.Step(modelOutput, 0, sample, g5);
        using var first5 = torch.randn(new long[] { 5 }, generator: g5);
        using var g6 = new torch.Generator(1234, torch.CPU);
        using var ref5 = torch.randn(new long[] { 5 }, generator: g6);
        Assert.True(first5.eq(ref5).all().item<bool>());
    }

    [Fact]
    public void Ddpm_last_step_with_exact_noise_returns_x0()
    {
        // t = 0 is the last timestep: prev_t = -1, alpha_prod_t_prev = 1, so x_prev = pred_original_sample, and with the
        // exact noise pred_original_sample = x0 (inside [-1, 1], untouched by the dynamic threshold since s clamps to 1).
        using var s = FromJson(IfDdpmJson);
        s.SetTimesteps(100);
        var gen = new torch.Generator(3, torch.CPU);
        using var x0 = torch.rand(new long[] { 1, 3, 6, 6 }, generator: gen) * 1.8 - 0.9;
        using var eps = torch.randn(new long[] { 1, 3, 6, 6 }, generator: gen);
        var a0 = s.AlphasCumprod[0];
        using var xt = a0.sqrt() * x0 + (1 - a0).sqrt() * eps;
        using var mo = torch.cat(new[] { eps, torch.zeros_like(eps) }, 1);
        using var prev = s.Step(mo, 0, xt, gen);
        double diff = (prev - x0).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"max diff {diff}");
    }

    [Fact]
    public void Ddpm_dynamic_thresholding_clamps_to_the_quantile()
    {
        // eps = 0 at t = 0: pred_x0 = sample / sqrt(abar_0); s = clamp(quantile(|x0|, 0.95), 1, 1.5);
        // result = clamp(x0, -s, s) / s, so every value lies in [-1, 1] and the largest ones are exactly +-1.
        using var s = FromJson(IfDdpmJson);
        s.SetTimesteps(10);
        var gen = new torch.Generator(11, torch.CPU);
        using var sample = torch.randn(new long[] { 2, 3, 8, 8 }, generator: gen) * 3;
        using var mo = torch.zeros(new long[] { 2, 6, 8, 8 });
        using var prev = s.Step(mo, 0, sample, gen);
        Assert.True(prev.abs().max().item<float>() <= 1f);
        Assert.Equal(1f, prev.abs().max().item<float>());

        // the same with thresholding off and clip_sample on: a hard clamp to [-1, 1]
        using var c = FromJson(IfDdpmJson.Replace("\"thresholding\": true", "\"thresholding\": false"));
        c.SetTimesteps(10);
        using var clipped = c.Step(mo, 0, sample, gen);
        using var x0 = sample / s.AlphasCumprod[0].sqrt();
        Assert.True(clipped.eq(x0.clamp(-1, 1)).all().item<bool>());
    }
}
