using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>EulerDiscreteScheduler</c> (schedulers/scheduling_euler_discrete.py), stepped as the pipelines step it
/// (s_churn = 0: no noise is added). Its timesteps are float32 (fractional with linspace spacing, e.g. 957.375): the UNet
/// gets <see cref="Scheduler.TimestepValues"/>, and <see cref="Scheduler.Timesteps"/> holds their integer parts as keys.
/// <see cref="ScaleModelInput"/> divides by (sigma**2 + 1) ** 0.5 and <see cref="InitNoiseSigma"/> is the largest
/// sigma (leading spacing: (max**2 + 1) ** 0.5), so the pipelines must call both, as diffusers' do.
/// Config: num_train_timesteps, beta_start, beta_end, beta_schedule (linear, scaled_linear, squaredcos_cap_v2),
/// trained_betas, prediction_type (epsilon, v_prediction, sample, original_sample), interpolation_type (linear),
/// timestep_spacing (linspace, leading, trailing), timestep_type (discrete; continuous acts only with v_prediction and is
/// not supported there), steps_offset, rescale_betas_zero_snr, final_sigmas_type (zero, sigma_min).
/// Not supported (an error naming the key): use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas,
/// interpolation_type log_linear.
/// </summary>
internal sealed class EulerDiscreteScheduler : Scheduler
{
    public string PredictionType { get; }
    public string InterpolationType { get; }
    public string TimestepSpacing { get; }
    public string TimestepType { get; }
    public int StepsOffset { get; }
    public string FinalSigmasType { get; }

    /// <summary>The sigmas (CPU float32): before <see cref="SetTimesteps"/> the training sigmas from high to low and 0;
    /// after it the inference sigmas and the final sigma.</summary>
    public Tensor Sigmas { get; private set; }
    private readonly float[] _trainSigmas; // ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, by training timestep
    private double[] _timestepValues;

    /// <summary>diffusers' <c>step_index</c> (null until the first scale_model_input or step).</summary>
    public int? StepIndex { get; private set; }

    public EulerDiscreteScheduler(DiffusersConfig config)
        : base(config, new[] { "linear", "scaled_linear", "squaredcos_cap_v2" }, rescaleZeroSnr: true, clampLastAlphaCumprod: true)
    {
        PredictionType = ValidateChoice(config, "prediction_type", "epsilon", "epsilon", "v_prediction", "sample", "original_sample");
        InterpolationType = ValidateChoice(config, "interpolation_type", "linear", "linear");
        RejectTrue(config, "use_karras_sigmas");
        RejectTrue(config, "use_exponential_sigmas");
        RejectTrue(config, "use_beta_sigmas");
        OptDoubleOrNull(config, "sigma_min"); // used only by the karras/exponential/beta sigmas
        OptDoubleOrNull(config, "sigma_max");
        TimestepSpacing = ValidateChoice(config, "timestep_spacing", "linspace", "linspace", "leading", "trailing");
        TimestepType = ValidateChoice(config, "timestep_type", "discrete", "discrete", "continuous");
        if (TimestepType == "continuous" && PredictionType == "v_prediction")
            throw new LensException($"{config.Path}: 'timestep_type' = continuous is not supported with prediction_type v_prediction (only discrete)");
        StepsOffset = Opt(config, "steps_offset", 0);
        FinalSigmasType = ValidateChoice(config, "final_sigmas_type", "zero", "zero", "sigma_min");

        using (var scope = NewDisposeScope())
            _trainSigmas = ((1 - AlphasCumprod) / AlphasCumprod).pow(0.5).data<float>().ToArray();
        // sigmas = cat([flip(train sigmas), 0]); timesteps = linspace(0, N - 1, N)[::-1] as float32
        Sigmas = torch.tensor(_trainSigmas.Reverse().Append(0f).ToArray(), dtype: ScalarType.Float32).DetachFromDisposeScope();
        _timestepValues = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(i => (double)i).ToArray();
    }

    public override double[] TimestepValues => _timestepValues;
    public override ScalarType TimestepDType => ScalarType.Float32;

    /// <summary>
    /// <c>init_noise_sigma</c>: max(sigmas) with linspace/trailing spacing, else (max(sigmas)**2 + 1) ** 0.5 (float32).
    /// </summary>
    public override double InitNoiseSigma
    {
        get
        {
            using var scope = NewDisposeScope();
            var max = Sigmas.max();
            return TimestepSpacing is "linspace" or "trailing" ? max.item<float>() : (max.pow(2) + 1).pow(0.5).item<float>();
        }
    }

    public override void SetTimesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1) throw new LensException($"the number of inference steps must be positive, not {numInferenceSteps}");
        int n = NumTrainTimesteps;
        if (numInferenceSteps > n)
            throw new LensException($"EulerDiscreteScheduler: {numInferenceSteps} inference steps are more than num_train_timesteps {n} (not supported here)");
        NumInferenceSteps = numInferenceSteps;
        float[] ts;
        switch (TimestepSpacing)
        {
            case "linspace":
                // np.linspace(0, N - 1, steps, dtype=np.float32)[::-1] (computed in float64, then cast)
                ts = NpLinspace(0, n - 1, numInferenceSteps).Select(x => (float)x).Reverse().ToArray();
                break;
            case "leading":
            {
                // (np.arange(0, steps) * (N // steps)).round()[::-1].astype(np.float32) + steps_offset
                int ratio = n / numInferenceSteps;
                ts = Enumerable.Range(0, numInferenceSteps).Reverse().Select(i => (float)((long)i * ratio) + StepsOffset).ToArray();
                break;
            }
            default: // trailing
            {
                // np.arange(N, 0, -N / steps).round().astype(np.float32) - 1
                double ratio = (double)n / numInferenceSteps;
                ts = NpArange(n, 0, -ratio).Select(t => (float)NpRound(t) - 1f).ToArray();
                break;
            }
        }

        // sigmas = np.interp(timesteps, arange(N), train sigmas) in float64, the final sigma appended, cast to float32
        var sigmas = new float[ts.Length + 1];
        for (int i = 0; i < ts.Length; i++) sigmas[i] = (float)Interp(ts[i], _trainSigmas);
        sigmas[^1] = FinalSigmasType == "sigma_min" ? _trainSigmas[0] : 0f;
        Sigmas.Dispose();
        Sigmas = torch.tensor(sigmas, dtype: ScalarType.Float32).DetachFromDisposeScope();
        _timestepValues = ts.Select(t => (double)t).ToArray();
        Timesteps = ts.Select(t => (long)Math.Floor(t)).ToArray();
        StepIndex = null;
    }

    /// <summary>
    /// numpy.interp(x, arange(len(fp)), fp) as numpy computes it in float64: fp[j] where x equals the grid point j, else
    /// slope * (x - j) + fp[j] with slope = fp[j + 1] - fp[j]; clamped to the ends.
    /// </summary>
    private static double Interp(double x, float[] fp)
    {
        int last = fp.Length - 1;
        if (x <= 0) return fp[0];
        if (x >= last) return fp[last];
        int j = (int)Math.Floor(x);
        if (j == x) return fp[j];
        double slope = ((double)fp[j + 1] - fp[j]) / 1.0;
        return slope * (x - j) + fp[j];
    }

    /// <summary><c>index_for_timestep</c>: the position of t (the second where it occurs twice).</summary>
    private int IndexForTimestep(long t)
    {
        var hits = Enumerable.Range(0, Timesteps.Length).Where(i => Timesteps[i] == t).ToArray();
        if (hits.Length == 0) throw new LensException($"timestep {t} is not one of the scheduler's timesteps");
        return hits.Length > 1 ? hits[1] : hits[0];
    }

    /// <summary>sample / ((sigma**2 + 1) ** 0.5) with the sigma of the current step (the step index starts at t's position).</summary>
    public override Tensor ScaleModelInput(Tensor sample, long timestep)
    {
        StepIndex ??= IndexForTimestep(timestep);
        using var scope = NewDisposeScope();
        var sigma = Sigmas[StepIndex.Value];
        return (sample / (sigma.pow(2) + 1).pow(0.5)).MoveToOuterDisposeScope();
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        if (NumInferenceSteps is null) throw new InvalidOperationException("EulerDiscreteScheduler: call SetTimesteps before Step");
        RequireSampleShape(modelOutput, sample);
        StepIndex ??= IndexForTimestep(timestep);
        int idx = StepIndex.Value;
        if (idx + 1 >= Sigmas.shape[0]) throw new LensException($"EulerDiscreteScheduler: step {idx + 1} of a {Timesteps.Length}-step schedule");

        using var scope = NewDisposeScope();
        var sample32 = sample.to(ScalarType.Float32);
        var sigma = Sigmas[idx];
        // s_churn = 0: gamma = 0, sigma_hat = sigma * (gamma + 1) = sigma, no noise is drawn
        var sigmaHat = sigma * 1.0;
        Tensor predOriginalSample = PredictionType switch
        {
            "epsilon" => sample32 - sigmaHat * modelOutput,
            "v_prediction" => modelOutput * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + (sample32 / (sigma.pow(2) + 1)),
            _ => modelOutput, // sample, original_sample
        };
        var derivative = (sample32 - predOriginalSample) / sigmaHat;
        var dt = Sigmas[idx + 1] - sigmaHat;
        var prevSample = sample32 + derivative * dt;
        prevSample = prevSample.to(modelOutput.dtype);
        StepIndex = idx + 1;
        return prevSample.MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        Sigmas.Dispose();
        base.Dispose();
    }
}
