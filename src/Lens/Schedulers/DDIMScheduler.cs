using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>DDIMScheduler</c> (schedulers/scheduling_ddim.py), stepped as the pipelines step it (eta = 0 unless
/// <see cref="Eta"/> is set, use_clipped_model_output false). Every tensor expression keeps diffusers' operand order
/// (0-dim float32 alphas, Python-float coefficients).
/// Config: num_train_timesteps, beta_start, beta_end, beta_schedule (linear, scaled_linear, squaredcos_cap_v2),
/// trained_betas, clip_sample, set_alpha_to_one, steps_offset, prediction_type (epsilon, sample, v_prediction),
/// thresholding, dynamic_thresholding_ratio, clip_sample_range, sample_max_value, timestep_spacing (linspace, leading,
/// trailing), rescale_betas_zero_snr.
/// </summary>
internal sealed class DDIMScheduler : Scheduler
{
    public bool ClipSample { get; }
    public bool SetAlphaToOne { get; }
    public int StepsOffset { get; }
    public string PredictionType { get; }
    public bool Thresholding { get; }
    public double DynamicThresholdingRatio { get; }
    public double ClipSampleRange { get; }
    public double SampleMaxValue { get; }
    public string TimestepSpacing { get; }

    /// <summary>The <c>eta</c> passed to step (the pipelines' default 0: deterministic DDIM). With eta &gt; 0 the step draws
    /// noise of the model output's shape from the generator, as diffusers' randn_tensor.</summary>
    public double Eta { get; set; }

    private readonly Tensor _finalAlphaCumprod;

    /// <summary>The predicted x_0 of the last <see cref="Step"/> (diffusers' <c>pred_original_sample</c>), owned by the scheduler.</summary>
    public Tensor? LastPredOriginalSample { get; private set; }

    public DDIMScheduler(DiffusersConfig config)
        : base(config, new[] { "linear", "scaled_linear", "squaredcos_cap_v2" }, rescaleZeroSnr: true)
    {
        ClipSample = Opt(config, "clip_sample", true);
        SetAlphaToOne = Opt(config, "set_alpha_to_one", true);
        StepsOffset = Opt(config, "steps_offset", 0);
        PredictionType = ValidateChoice(config, "prediction_type", "epsilon", "epsilon", "sample", "v_prediction");
        Thresholding = Opt(config, "thresholding", false);
        DynamicThresholdingRatio = Opt(config, "dynamic_thresholding_ratio", 0.995);
        ClipSampleRange = Opt(config, "clip_sample_range", 1.0);
        SampleMaxValue = Opt(config, "sample_max_value", 1.0);
        TimestepSpacing = ValidateChoice(config, "timestep_spacing", "leading", "linspace", "leading", "trailing");
        // final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else alphas_cumprod[0]
        _finalAlphaCumprod = (SetAlphaToOne ? torch.tensor(1.0f) : AlphasCumprod[0].clone()).DetachFromDisposeScope();
    }

    public override void SetTimesteps(int numInferenceSteps)
    {
        Timesteps = SpacedTimesteps(numInferenceSteps, TimestepSpacing, StepsOffset);
        NumInferenceSteps = numInferenceSteps;
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        if (NumInferenceSteps is not int steps)
            throw new InvalidOperationException("DDIMScheduler: call SetTimesteps before Step");
        RequireSampleShape(modelOutput, sample);
        long t = timestep;
        if (t < 0 || t >= NumTrainTimesteps) throw new LensException($"timestep {t} is outside [0, {NumTrainTimesteps})");
        // 1. prev_timestep = timestep - N // num_inference_steps
        long prevT = t - NumTrainTimesteps / steps;

        using var scope = NewDisposeScope();
        // 2. alphas, betas (0-dim float32)
        var alphaProdT = AlphasCumprod[t];
        var alphaProdTPrev = prevT >= 0 ? AlphasCumprod[prevT] : _finalAlphaCumprod.alias();
        var betaProdT = 1 - alphaProdT;

        // 3. predicted x_0 and epsilon
        Tensor predOriginalSample, predEpsilon;
        switch (PredictionType)
        {
            case "epsilon":
                predOriginalSample = (sample - betaProdT.pow(0.5) * modelOutput) / alphaProdT.pow(0.5);
                predEpsilon = modelOutput;
                break;
            case "sample":
                predOriginalSample = modelOutput;
                predEpsilon = (sample - alphaProdT.pow(0.5) * predOriginalSample) / betaProdT.pow(0.5);
                break;
            default: // v_prediction
                predOriginalSample = alphaProdT.pow(0.5) * sample - betaProdT.pow(0.5) * modelOutput;
                predEpsilon = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;
                break;
        }

        // 4. clip or threshold
        if (Thresholding) predOriginalSample = ThresholdSample(predOriginalSample, DynamicThresholdingRatio, SampleMaxValue);
        else if (ClipSample) predOriginalSample = predOriginalSample.clamp(-ClipSampleRange, ClipSampleRange);

        // 5. variance sigma_t(eta) = eta * variance ** 0.5 (formula (16))
        var variance = GetVariance(alphaProdT, alphaProdTPrev);
        var stdDevT = Eta * variance.pow(0.5);

        // 6. direction pointing to x_t (formula (12)), 7. x_{t-1} without the random noise
        var predSampleDirection = (1 - alphaProdTPrev - stdDevT.pow(2)).pow(0.5) * predEpsilon;
        var prevSample = alphaProdTPrev.pow(0.5) * predOriginalSample + predSampleDirection;

        if (Eta > 0)
            prevSample = prevSample + stdDevT * DrawNoise(modelOutput, generator);

        LastPredOriginalSample?.Dispose();
        LastPredOriginalSample = predOriginalSample.alias().DetachFromDisposeScope();
        return prevSample.MoveToOuterDisposeScope();
    }

    /// <summary><c>_get_variance</c>: (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev).</summary>
    private static Tensor GetVariance(Tensor alphaProdT, Tensor alphaProdTPrev)
    {
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;
        return (betaProdTPrev / betaProdT) * (1 - alphaProdT / alphaProdTPrev);
    }

    public override void Dispose()
    {
        LastPredOriginalSample?.Dispose();
        LastPredOriginalSample = null;
        _finalAlphaCumprod.Dispose();
        base.Dispose();
    }
}
