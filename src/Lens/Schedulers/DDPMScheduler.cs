using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>DDPMScheduler</c> (schedulers/scheduling_ddpm.py), as DeepFloyd IF configures it and in its plainer
/// forms. Config: num_train_timesteps, beta_start, beta_end, beta_schedule (linear, scaled_linear, squaredcos_cap_v2),
/// trained_betas, variance_type (fixed_small, fixed_small_log, fixed_large, fixed_large_log, learned, learned_range),
/// clip_sample, clip_sample_range, prediction_type (epsilon, sample, v_prediction), thresholding,
/// dynamic_thresholding_ratio, sample_max_value, timestep_spacing (linspace, leading, trailing), steps_offset.
/// rescale_betas_zero_snr = true is not supported.
/// The variance noise is drawn as diffusers' <c>randn_tensor(model_output.shape, generator, device, dtype)</c> where
/// model_output is the prediction AFTER splitting off the predicted variance (so it has the sample's shape); a CPU
/// generator draws on the CPU and the noise is then moved to the sample's device.
/// </summary>
internal sealed class DDPMScheduler : Scheduler
{
    public static readonly string[] VarianceTypes = { "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range" };

    public string VarianceType { get; }
    public bool ClipSample { get; }
    public double ClipSampleRange { get; }
    public string PredictionType { get; }
    public bool Thresholding { get; }
    public double DynamicThresholdingRatio { get; }
    public double SampleMaxValue { get; }
    public string TimestepSpacing { get; }
    public int StepsOffset { get; }
    public bool CustomTimesteps { get; private set; }

    private readonly Tensor _one;

    /// <summary>The predicted x_0 of the last <see cref="Step"/> (diffusers' <c>pred_original_sample</c>), owned by the scheduler.</summary>
    public Tensor? LastPredOriginalSample { get; private set; }

    public DDPMScheduler(DiffusersConfig config)
        : base(config, new[] { "linear", "scaled_linear", "squaredcos_cap_v2" })
    {
        RejectTrue(config, "rescale_betas_zero_snr");
        VarianceType = ValidateChoice(config, "variance_type", "fixed_small", VarianceTypes);
        ClipSample = Opt(config, "clip_sample", true);
        ClipSampleRange = Opt(config, "clip_sample_range", 1.0);
        PredictionType = ValidateChoice(config, "prediction_type", "epsilon", "epsilon", "sample", "v_prediction");
        Thresholding = Opt(config, "thresholding", false);
        DynamicThresholdingRatio = Opt(config, "dynamic_thresholding_ratio", 0.995);
        SampleMaxValue = Opt(config, "sample_max_value", 1.0);
        TimestepSpacing = ValidateChoice(config, "timestep_spacing", "leading", "linspace", "leading", "trailing");
        StepsOffset = Opt(config, "steps_offset", 0);
        _one = torch.tensor(1.0f).DetachFromDisposeScope();
    }

    public override void SetTimesteps(int numInferenceSteps)
    {
        Timesteps = SpacedTimesteps(numInferenceSteps, TimestepSpacing, StepsOffset);
        NumInferenceSteps = numInferenceSteps;
        CustomTimesteps = false;
    }

    /// <summary>diffusers' <c>set_timesteps(timesteps=[...])</c>: custom, strictly descending timesteps below num_train_timesteps.</summary>
    public void SetTimesteps(long[] timesteps)
    {
        if (timesteps.Length == 0) throw new LensException("custom timesteps must not be empty");
        for (int i = 1; i < timesteps.Length; i++)
            if (timesteps[i] >= timesteps[i - 1]) throw new LensException("custom timesteps must be in descending order");
        if (timesteps[0] >= NumTrainTimesteps)
            throw new LensException($"custom timesteps must start before num_train_timesteps {NumTrainTimesteps}");
        Timesteps = timesteps.ToArray();
        CustomTimesteps = true;
        NumInferenceSteps = null;
    }

    /// <summary>
    /// <c>previous_timestep</c>: with inference timesteps, the entry after the first occurrence of t (-1 after the last);
    /// otherwise t - 1.
    /// </summary>
    public long PreviousTimestep(long t)
    {
        if (CustomTimesteps || NumInferenceSteps is not null)
        {
            int index = Array.IndexOf(Timesteps, t);
            if (index < 0) throw new LensException($"timestep {t} is not one of the scheduler's timesteps");
            return index == Timesteps.Length - 1 ? -1 : Timesteps[index + 1];
        }
        return t - 1;
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        long t = timestep;
        if (t < 0 || t >= NumTrainTimesteps) throw new LensException($"timestep {t} is outside [0, {NumTrainTimesteps})");
        long prevT = PreviousTimestep(t);

        using var scope = NewDisposeScope();
        Tensor? predictedVariance = null;
        if (modelOutput.shape[1] == sample.shape[1] * 2 && VarianceType is "learned" or "learned_range")
        {
            var parts = torch.split(modelOutput, new[] { sample.shape[1], sample.shape[1] }, 1);
            modelOutput = parts[0];
            predictedVariance = parts[1];
        }

        // 1. alphas, betas (0-dim float32)
        var alphaProdT = AlphasCumprod[t];
        var alphaProdTPrev = prevT >= 0 ? AlphasCumprod[prevT] : _one.alias();
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;
        var currentAlphaT = alphaProdT / alphaProdTPrev;
        var currentBetaT = 1 - currentAlphaT;

        // 2. predicted x_0
        Tensor predOriginalSample = PredictionType switch
        {
            "epsilon" => (sample - betaProdT.pow(0.5) * modelOutput) / alphaProdT.pow(0.5),
            "sample" => modelOutput,
            "v_prediction" => alphaProdT.pow(0.5) * sample - betaProdT.pow(0.5) * modelOutput,
            _ => throw new InvalidOperationException(),
        };

        // 3. clip or threshold
        if (Thresholding) predOriginalSample = ThresholdSample(predOriginalSample, DynamicThresholdingRatio, SampleMaxValue);
        else if (ClipSample) predOriginalSample = predOriginalSample.clamp(-ClipSampleRange, ClipSampleRange);

        // 4. coefficients (formula (7) of the DDPM paper)
        var predOriginalSampleCoeff = (alphaProdTPrev.pow(0.5) * currentBetaT) / betaProdT;
        var currentSampleCoeff = currentAlphaT.pow(0.5) * betaProdTPrev / betaProdT;

        // 5. predicted previous sample
        var predPrevSample = predOriginalSampleCoeff * predOriginalSample + currentSampleCoeff * sample;

        // 6. noise
        if (t > 0)
        {
            var variance = VarianceType switch
            {
                "fixed_small_log" => GetVariance(t, predictedVariance) * DrawNoise(modelOutput, generator),
                "learned_range" => NoiseScaledLearnedRange(t, predictedVariance, modelOutput, generator),
                _ => NoiseScaledDefault(t, predictedVariance, modelOutput, generator),
            };
            predPrevSample = predPrevSample + variance;
        }

        LastPredOriginalSample?.Dispose();
        LastPredOriginalSample = predOriginalSample.alias().DetachFromDisposeScope();
        return predPrevSample.MoveToOuterDisposeScope();
    }

    // variance = _get_variance(t, predicted_variance); variance = exp(0.5 * variance) * noise
    // (the noise is drawn before _get_variance, as in diffusers; _get_variance draws nothing)
    private Tensor NoiseScaledLearnedRange(long t, Tensor? predictedVariance, Tensor modelOutput, Generator? generator)
    {
        var noise = DrawNoise(modelOutput, generator);
        var variance = GetVariance(t, predictedVariance);
        return torch.exp(0.5 * variance) * noise;
    }

    // variance = (_get_variance(t, predicted_variance) ** 0.5) * noise
    private Tensor NoiseScaledDefault(long t, Tensor? predictedVariance, Tensor modelOutput, Generator? generator)
    {
        var noise = DrawNoise(modelOutput, generator);
        return GetVariance(t, predictedVariance).pow(0.5) * noise;
    }

    /// <summary><c>_get_variance(t, predicted_variance)</c> for the configured variance type.</summary>
    private Tensor GetVariance(long t, Tensor? predictedVariance)
    {
        long prevT = PreviousTimestep(t);
        var alphaProdT = AlphasCumprod[t];
        var alphaProdTPrev = prevT >= 0 ? AlphasCumprod[prevT] : _one.alias();
        var currentBetaT = 1 - alphaProdT / alphaProdTPrev;

        // variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, clamped to >= 1e-20
        var variance = (1 - alphaProdTPrev) / (1 - alphaProdT) * currentBetaT;
        variance = torch.clamp(variance, min: 1e-20);

        switch (VarianceType)
        {
            case "fixed_small":
                return variance;
            case "fixed_small_log":
                variance = torch.log(variance);
                return torch.exp(0.5 * variance);
            case "fixed_large":
                return currentBetaT;
            case "fixed_large_log":
                return torch.log(currentBetaT);
            case "learned":
                return predictedVariance ?? throw new LensException(
                    "DDPMScheduler with variance_type 'learned' needs a model output with twice the sample's channels");
            case "learned_range":
            {
                if (predictedVariance is null)
                    throw new LensException("DDPMScheduler with variance_type 'learned_range' needs a model output with twice the sample's channels");
                var minLog = torch.log(variance);
                var maxLog = torch.log(currentBetaT);
                var frac = (predictedVariance + 1) / 2;
                return frac * maxLog + (1 - frac) * minLog;
            }
            default:
                throw new InvalidOperationException();
        }
    }

    public override void Dispose()
    {
        LastPredOriginalSample?.Dispose();
        LastPredOriginalSample = null;
        _one.Dispose();
        base.Dispose();
    }
}
