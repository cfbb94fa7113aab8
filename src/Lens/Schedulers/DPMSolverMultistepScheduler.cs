using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>DPMSolverMultistepScheduler</c> (schedulers/scheduling_dpmsolver_multistep.py): DPM-Solver++ multistep
/// (the scheduler the Diffusion Lens paper ran its models under). The sigmas are a CPU float32 tensor as in diffusers,
/// every coefficient a 0-dim float32 tensor taken from it, and every tensor expression keeps diffusers' operand order;
/// the step runs on the sample cast to float32 and returns the converted model output's dtype, as diffusers does.
/// Config: num_train_timesteps, beta_start, beta_end, beta_schedule (linear, scaled_linear, squaredcos_cap_v2),
/// trained_betas, solver_order (1, 2, 3), prediction_type (epsilon, sample, v_prediction), thresholding,
/// dynamic_thresholding_ratio, sample_max_value, algorithm_type (dpmsolver++, sde-dpmsolver++; deis is dpmsolver++ as in
/// diffusers), solver_type (midpoint, heun; logrho/bh1/bh2 are midpoint as in diffusers), lower_order_final,
/// euler_at_final, final_sigmas_type (zero, sigma_min), lambda_min_clipped, variance_type (learned/learned_range: the
/// output's first 3 channels are the prediction), timestep_spacing (linspace, leading, trailing), steps_offset,
/// rescale_betas_zero_snr. Not supported (an error naming the key): algorithm_type dpmsolver / sde-dpmsolver,
/// prediction_type flow_prediction, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, use_lu_lambdas,
/// use_flow_sigmas.
/// </summary>
internal sealed class DPMSolverMultistepScheduler : Scheduler
{
    public int SolverOrder { get; }
    public string PredictionType { get; }
    public bool Thresholding { get; }
    public double DynamicThresholdingRatio { get; }
    public double SampleMaxValue { get; }
    public string AlgorithmType { get; }
    public string SolverType { get; }
    public bool LowerOrderFinal { get; }
    public bool EulerAtFinal { get; }
    public string FinalSigmasType { get; }
    public double LambdaMinClipped { get; }
    public string? VarianceType { get; }
    public string TimestepSpacing { get; }
    public int StepsOffset { get; }

    /// <summary>((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 over the training timesteps (CPU float32).</summary>
    private readonly Tensor _trainSigmas;
    /// <summary>log(alpha_t) - log(sigma_t) over the training timesteps (CPU float32).</summary>
    private readonly Tensor _lambdaT;

    /// <summary>The inference sigmas and the final sigma (CPU float32), set by <see cref="SetTimesteps"/>.</summary>
    public Tensor? Sigmas { get; private set; }

    private readonly Tensor?[] _modelOutputs;
    private int _lowerOrderNums;
    /// <summary>diffusers' <c>step_index</c> (null until the first step).</summary>
    public int? StepIndex { get; private set; }

    public DPMSolverMultistepScheduler(DiffusersConfig config)
        : base(config, new[] { "linear", "scaled_linear", "squaredcos_cap_v2" }, rescaleZeroSnr: true, clampLastAlphaCumprod: true)
    {
        SolverOrder = Opt(config, "solver_order", 2);
        if (SolverOrder is < 1 or > 3)
            throw new LensException($"{config.Path}: 'solver_order' = {SolverOrder} is not supported (supported: 1, 2, 3)");
        PredictionType = ValidateChoice(config, "prediction_type", "epsilon", "epsilon", "sample", "v_prediction");
        Thresholding = Opt(config, "thresholding", false);
        DynamicThresholdingRatio = Opt(config, "dynamic_thresholding_ratio", 0.995);
        SampleMaxValue = Opt(config, "sample_max_value", 1.0);
        var algorithm = Opt(config, "algorithm_type", "dpmsolver++");
        if (algorithm == "deis") { algorithm = "dpmsolver++"; Record("algorithm_type", algorithm); } // as diffusers registers it
        if (algorithm is not ("dpmsolver++" or "sde-dpmsolver++"))
            throw new LensException($"{config.Path}: 'algorithm_type' = {algorithm} is not supported (supported: dpmsolver++, sde-dpmsolver++)");
        AlgorithmType = algorithm;
        var solver = Opt(config, "solver_type", "midpoint");
        if (solver is "logrho" or "bh1" or "bh2") { solver = "midpoint"; Record("solver_type", solver); }
        if (solver is not ("midpoint" or "heun"))
            throw new LensException($"{config.Path}: 'solver_type' = {solver} is not supported (supported: midpoint, heun)");
        SolverType = solver;
        LowerOrderFinal = Opt(config, "lower_order_final", true);
        EulerAtFinal = Opt(config, "euler_at_final", false);
        RejectTrue(config, "use_karras_sigmas");
        RejectTrue(config, "use_exponential_sigmas");
        RejectTrue(config, "use_beta_sigmas");
        RejectTrue(config, "use_lu_lambdas");
        RejectTrue(config, "use_flow_sigmas");
        // flow_shift, use_dynamic_shifting and time_shift_type only act with flow sigmas or set_timesteps(mu=...)
        Opt(config, "flow_shift", 1.0);
        Opt(config, "use_dynamic_shifting", false);
        Opt(config, "time_shift_type", "exponential");
        FinalSigmasType = ValidateChoice(config, "final_sigmas_type", "zero", "zero", "sigma_min");
        LambdaMinClipped = config.Has("lambda_min_clipped") ? config.Double("lambda_min_clipped") : double.NegativeInfinity;
        if (config.Has("lambda_min_clipped")) Opt(config, "lambda_min_clipped", 0.0); else Record("lambda_min_clipped", "-inf");
        VarianceType = OptOrNull(config, "variance_type");
        TimestepSpacing = ValidateChoice(config, "timestep_spacing", "linspace", "linspace", "leading", "trailing");
        StepsOffset = Opt(config, "steps_offset", 0);

        using (var scope = NewDisposeScope())
        {
            var alphaT = torch.sqrt(AlphasCumprod);
            var sigmaT = torch.sqrt(1 - AlphasCumprod);
            _lambdaT = (torch.log(alphaT) - torch.log(sigmaT)).MoveToOuterDisposeScope();
            _trainSigmas = ((1 - AlphasCumprod) / AlphasCumprod).pow(0.5).MoveToOuterDisposeScope();
        }
        _lambdaT.DetachFromDisposeScope();
        _trainSigmas.DetachFromDisposeScope();
        _modelOutputs = new Tensor?[SolverOrder];
    }

    /// <summary>Leading spacing with steps_offset can end at t = num_train_timesteps: the sigma is interpolated (clamped).</summary>
    internal override bool TakesTimestepAtTrainCount => true;

    public override void SetTimesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1) throw new LensException($"the number of inference steps must be positive, not {numInferenceSteps}");
        int n = NumTrainTimesteps;
        // clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped): the count of (ascending) flipped lambdas below it
        var lambdas = _lambdaT.data<float>().ToArray();
        int clippedIdx = lambdas.Count(l => (double)l < LambdaMinClipped);
        int lastTimestep = n - clippedIdx;
        long[] ts;
        switch (TimestepSpacing)
        {
            case "linspace":
                // np.linspace(0, last - 1, steps + 1).round()[::-1][:-1]
                ts = NpLinspace(0, lastTimestep - 1, numInferenceSteps + 1).Select(NpRound).Reverse().Take(numInferenceSteps).ToArray();
                break;
            case "leading":
            {
                // (np.arange(0, steps + 1) * (last // (steps + 1))).round()[::-1][:-1] + steps_offset
                long ratio = lastTimestep / (numInferenceSteps + 1);
                ts = Enumerable.Range(1, numInferenceSteps).Reverse().Select(i => i * ratio + StepsOffset).ToArray();
                break;
            }
            default: // trailing
            {
                // np.arange(last, 0, -N / steps).round() - 1
                double ratio = (double)n / numInferenceSteps;
                ts = NpArange(lastTimestep, 0, -ratio).Select(t => NpRound(t) - 1).ToArray();
                break;
            }
        }
        if (ts.Length == 0)
            throw new LensException($"DPMSolverMultistepScheduler: {numInferenceSteps} inference steps give no timesteps with timestep_spacing {TimestepSpacing}");

        // sigmas = np.interp(timesteps, arange(N), sigmas): exact at integer timesteps, clamped to the ends (leading
        // spacing with steps_offset can reach N); then the final sigma; float32
        var all = _trainSigmas.data<float>().ToArray();
        float last = FinalSigmasType == "sigma_min" ? all[0] : 0f;
        var sigmas = ts.Select(t => all[Math.Clamp(t, 0, n - 1)]).Append(last).ToArray();
        Sigmas?.Dispose();
        Sigmas = torch.tensor(sigmas, dtype: ScalarType.Float32).DetachFromDisposeScope();
        Timesteps = ts;
        NumInferenceSteps = ts.Length;
        ResetState();
    }

    private void ResetState()
    {
        for (int i = 0; i < _modelOutputs.Length; i++) { _modelOutputs[i]?.Dispose(); _modelOutputs[i] = null; }
        _lowerOrderNums = 0;
        StepIndex = null;
    }

    /// <summary>
    /// <c>index_for_timestep</c>: the position of t in the timesteps (the second where it occurs twice, so a restart in the
    /// middle of a schedule with a repeated timestep does not skip a sigma); the last position when absent.
    /// </summary>
    private int IndexForTimestep(long t)
    {
        var hits = Enumerable.Range(0, Timesteps.Length).Where(i => Timesteps[i] == t).ToArray();
        return hits.Length == 0 ? Timesteps.Length - 1 : hits.Length > 1 ? hits[1] : hits[0];
    }

    /// <summary><c>_sigma_to_alpha_sigma_t</c>: alpha_t = 1 / ((sigma**2 + 1) ** 0.5); sigma_t = sigma * alpha_t.</summary>
    private static (Tensor Alpha, Tensor Sigma) AlphaSigma(Tensor sigma)
    {
        var alpha = (sigma.pow(2) + 1).pow(0.5).reciprocal();
        return (alpha, sigma * alpha);
    }

    private static Tensor Lambda(Tensor alpha, Tensor sigma) => torch.log(alpha) - torch.log(sigma);

    /// <summary><c>convert_model_output</c> for DPM-Solver++: the predicted x_0 (thresholded when configured).</summary>
    private Tensor ConvertModelOutput(Tensor modelOutput, Tensor sample)
    {
        Tensor x0;
        switch (PredictionType)
        {
            case "epsilon":
            {
                if (VarianceType is "learned" or "learned_range") modelOutput = modelOutput.slice(1, 0, 3, 1); // model_output[:, :3]
                var (alphaT, sigmaT) = AlphaSigma(Sigmas![StepIndex!.Value]);
                x0 = (sample - sigmaT * modelOutput) / alphaT;
                break;
            }
            case "sample":
                x0 = modelOutput;
                break;
            default: // v_prediction
            {
                var (alphaT, sigmaT) = AlphaSigma(Sigmas![StepIndex!.Value]);
                x0 = alphaT * sample - sigmaT * modelOutput;
                break;
            }
        }
        if (Thresholding) x0 = ThresholdSample(x0, DynamicThresholdingRatio, SampleMaxValue);
        return x0;
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        if (NumInferenceSteps is null || Sigmas is null)
            throw new InvalidOperationException("DPMSolverMultistepScheduler: call SetTimesteps before Step");
        StepIndex ??= IndexForTimestep(timestep);
        int idx = StepIndex.Value;
        if (idx >= Timesteps.Length) throw new LensException($"DPMSolverMultistepScheduler: step {idx + 1} of a {Timesteps.Length}-step schedule");
        int len = Timesteps.Length;
        bool lowerOrderFinal = idx == len - 1 && (EulerAtFinal || (LowerOrderFinal && len < 15) || FinalSigmasType == "zero");
        bool lowerOrderSecond = idx == len - 2 && LowerOrderFinal && len < 15;

        using var scope = NewDisposeScope();
        var x0 = ConvertModelOutput(modelOutput, sample);
        var dropped = _modelOutputs[0];
        for (int i = 0; i < SolverOrder - 1; i++) _modelOutputs[i] = _modelOutputs[i + 1];
        dropped?.Dispose(); // shifted out (order 1: overwritten below)
        _modelOutputs[^1] = Keep(x0);

        var sample32 = sample.to(ScalarType.Float32);
        Tensor? noise = AlgorithmType == "sde-dpmsolver++" ? DrawNoise(x0, generator, ScalarType.Float32) : null;

        Tensor prev;
        if (SolverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
            prev = FirstOrderUpdate(x0, sample32, noise, idx);
        else if (SolverOrder == 2 || _lowerOrderNums < 2 || lowerOrderSecond)
            prev = SecondOrderUpdate(sample32, noise, idx);
        else
            prev = ThirdOrderUpdate(sample32, noise, idx);

        if (_lowerOrderNums < SolverOrder) _lowerOrderNums++;
        prev = prev.to(x0.dtype);
        StepIndex = idx + 1;
        return prev.MoveToOuterDisposeScope();
    }

    /// <summary><c>dpm_solver_first_order_update</c> (DPM-Solver++ first order = DDIM).</summary>
    private Tensor FirstOrderUpdate(Tensor modelOutput, Tensor sample, Tensor? noise, int idx)
    {
        var (alphaT, sigmaT) = AlphaSigma(Sigmas![idx + 1]);
        var (alphaS, sigmaS) = AlphaSigma(Sigmas[idx]);
        var lambdaT = Lambda(alphaT, sigmaT);
        var lambdaS = Lambda(alphaS, sigmaS);
        var h = lambdaT - lambdaS;
        if (noise is null)
            return (sigmaT / sigmaS) * sample - (alphaT * (torch.exp(-h) - 1.0)) * modelOutput;
        return (sigmaT / sigmaS * torch.exp(-h)) * sample
               + (alphaT * (1 - torch.exp(-2.0 * h))) * modelOutput
               + sigmaT * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise;
    }

    /// <summary><c>multistep_dpm_solver_second_order_update</c>.</summary>
    private Tensor SecondOrderUpdate(Tensor sample, Tensor? noise, int idx)
    {
        var (alphaT, sigmaT) = AlphaSigma(Sigmas![idx + 1]);
        var (alphaS0, sigmaS0) = AlphaSigma(Sigmas[idx]);
        var (alphaS1, sigmaS1) = AlphaSigma(Sigmas[idx - 1]);
        var lambdaT = Lambda(alphaT, sigmaT);
        var lambdaS0 = Lambda(alphaS0, sigmaS0);
        var lambdaS1 = Lambda(alphaS1, sigmaS1);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var r0 = h0 / h;
        var d0 = m0;
        var d1 = r0.reciprocal() * (m0 - m1);
        if (noise is null)
        {
            if (SolverType == "midpoint")
                return (sigmaT / sigmaS0) * sample
                       - (alphaT * (torch.exp(-h) - 1.0)) * d0
                       - 0.5 * (alphaT * (torch.exp(-h) - 1.0)) * d1;
            return (sigmaT / sigmaS0) * sample
                   - (alphaT * (torch.exp(-h) - 1.0)) * d0
                   + (alphaT * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1;
        }
        if (SolverType == "midpoint")
            return (sigmaT / sigmaS0 * torch.exp(-h)) * sample
                   + (alphaT * (1 - torch.exp(-2.0 * h))) * d0
                   + 0.5 * (alphaT * (1 - torch.exp(-2.0 * h))) * d1
                   + sigmaT * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise;
        return (sigmaT / sigmaS0 * torch.exp(-h)) * sample
               + (alphaT * (1 - torch.exp(-2.0 * h))) * d0
               + (alphaT * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0)) * d1
               + sigmaT * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise;
    }

    /// <summary><c>multistep_dpm_solver_third_order_update</c>.</summary>
    private Tensor ThirdOrderUpdate(Tensor sample, Tensor? noise, int idx)
    {
        var (alphaT, sigmaT) = AlphaSigma(Sigmas![idx + 1]);
        var (alphaS0, sigmaS0) = AlphaSigma(Sigmas[idx]);
        var (alphaS1, sigmaS1) = AlphaSigma(Sigmas[idx - 1]);
        var (alphaS2, sigmaS2) = AlphaSigma(Sigmas[idx - 2]);
        var lambdaT = Lambda(alphaT, sigmaT);
        var lambdaS0 = Lambda(alphaS0, sigmaS0);
        var lambdaS1 = Lambda(alphaS1, sigmaS1);
        var lambdaS2 = Lambda(alphaS2, sigmaS2);
        var m0 = _modelOutputs[^1]!;
        var m1 = _modelOutputs[^2]!;
        var m2 = _modelOutputs[^3]!;
        var h = lambdaT - lambdaS0;
        var h0 = lambdaS0 - lambdaS1;
        var h1 = lambdaS1 - lambdaS2;
        var r0 = h0 / h;
        var r1 = h1 / h;
        var d0 = m0;
        var d10 = r0.reciprocal() * (m0 - m1);
        var d11 = r1.reciprocal() * (m1 - m2);
        var d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
        var d2 = (r0 + r1).reciprocal() * (d10 - d11);
        if (noise is null)
            return (sigmaT / sigmaS0) * sample
                   - (alphaT * (torch.exp(-h) - 1.0)) * d0
                   + (alphaT * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1
                   - (alphaT * ((torch.exp(-h) - 1.0 + h) / h.pow(2) - 0.5)) * d2;
        return (sigmaT / sigmaS0 * torch.exp(-h)) * sample
               + (alphaT * (1.0 - torch.exp(-2.0 * h))) * d0
               + (alphaT * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0)) * d1
               + (alphaT * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h).pow(2) - 0.5)) * d2
               + sigmaT * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise;
    }

    public override void Dispose()
    {
        ResetState();
        Sigmas?.Dispose();
        _trainSigmas.Dispose();
        _lambdaT.Dispose();
        base.Dispose();
    }
}
