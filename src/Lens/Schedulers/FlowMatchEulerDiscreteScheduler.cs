using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>FlowMatchEulerDiscreteScheduler</c> (schedulers/scheduling_flow_match_euler_discrete.py), the
/// rectified-flow Euler step FLUX runs: prev = sample + (sigma_next - sigma) * velocity, in float32, cast back to the
/// model output's dtype. Its timesteps are sigma * num_train_timesteps (float32, e.g. 1000, 750, ...): the model gets
/// <see cref="Scheduler.TimestepValues"/>; <see cref="Scheduler.Timesteps"/> holds their integer parts as keys.
/// Built from config as diffusers' from_config: num_train_timesteps, shift, use_dynamic_shifting, base_shift, max_shift,
/// base_image_seq_len, max_image_seq_len, time_shift_type (exponential, linear). Not supported (an error naming the
/// key): invert_sigmas, shift_terminal, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, stochastic_sampling.
/// The step draws no noise. The initial noise is not scaled (init_noise_sigma 1) and the model input not either.
/// </summary>
internal sealed class FlowMatchEulerDiscreteScheduler : Scheduler
{
    public double Shift { get; }
    public bool UseDynamicShifting { get; }
    public double BaseShift { get; }
    public double MaxShift { get; }
    public int BaseImageSeqLen { get; }
    public int MaxImageSeqLen { get; }
    public string TimeShiftType { get; }

    /// <summary>The sigmas (CPU float32): the training sigmas until a schedule is set, then the inference sigmas and a final 0.</summary>
    public Tensor Sigmas { get; private set; }
    private readonly float _sigmaMax, _sigmaMin;
    private double[] _timestepValues;
    /// <summary>diffusers' step index; the pipeline sets the begin index 0, so it starts at the first timestep.</summary>
    public int StepIndex { get; private set; }

    public FlowMatchEulerDiscreteScheduler(DiffusersConfig config) : base(config)
    {
        Shift = Opt(config, "shift", 1.0);
        UseDynamicShifting = Opt(config, "use_dynamic_shifting", false);
        BaseShift = Opt(config, "base_shift", 0.5);
        MaxShift = Opt(config, "max_shift", 1.15);
        BaseImageSeqLen = Opt(config, "base_image_seq_len", 256);
        MaxImageSeqLen = Opt(config, "max_image_seq_len", 4096);
        TimeShiftType = ValidateChoice(config, "time_shift_type", "exponential", "exponential", "linear");
        RejectTrue(config, "invert_sigmas");
        if (OptDoubleOrNull(config, "shift_terminal") is double st && st != 0)
            throw new LensException($"{config.Path}: 'shift_terminal' = {st} is not supported by FlowMatchEulerDiscreteScheduler here (only null)");
        RejectTrue(config, "use_karras_sigmas");
        RejectTrue(config, "use_exponential_sigmas");
        RejectTrue(config, "use_beta_sigmas");
        RejectTrue(config, "stochastic_sampling");

        // timesteps = linspace(1, N, N, float32)[::-1]; sigmas = timesteps / N, shifted unless dynamic (float32 torch ops)
        int n = NumTrainTimesteps;
        var sigmas = new float[n];
        var trainTimesteps = NpLinspace(1, n, n);
        for (int i = 0; i < n; i++)
        {
            float t = (float)trainTimesteps[n - 1 - i];
            float s = t / n;
            sigmas[i] = UseDynamicShifting ? s : ShiftSigma((float)Shift, s);
        }
        _sigmaMax = sigmas[0];
        _sigmaMin = sigmas[^1];
        Sigmas = torch.tensor(sigmas, dtype: ScalarType.Float32).DetachFromDisposeScope();
        _timestepValues = sigmas.Select(s => (double)(s * n)).ToArray();
        Timesteps = _timestepValues.Select(t => (long)Math.Floor(t)).ToArray();
    }

    /// <summary>shift * s / (1 + (shift - 1) * s) in float32.</summary>
    private static float ShiftSigma(float shift, float s) => shift * s / (1f + (shift - 1f) * s);

    public override double[] TimestepValues => _timestepValues;
    public override ScalarType TimestepDType => ScalarType.Float32;
    internal override bool TakesTimestepAtTrainCount => true;

    /// <summary>
    /// The FLUX pipelines' <c>calculate_shift(image_seq_len, base_image_seq_len, max_image_seq_len, base_shift,
    /// max_shift)</c>: mu linear in the packed image sequence length (float64).
    /// </summary>
    public double CalculateShift(long imageSeqLen)
    {
        double m = (MaxShift - BaseShift) / (MaxImageSeqLen - BaseImageSeqLen);
        double b = BaseShift - m * BaseImageSeqLen;
        return imageSeqLen * m + b;
    }

    /// <summary>
    /// <c>set_timesteps(num_inference_steps)</c> without custom sigmas: timesteps = linspace(sigma_max * N, sigma_min * N,
    /// steps) in float64, sigmas = timesteps / N, shifted (float64), then float32. Needs no mu unless dynamic shifting
    /// (then use <see cref="SetSigmas"/>).
    /// </summary>
    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckSteps(numInferenceSteps);
        if (UseDynamicShifting)
            throw new LensException("FlowMatchEulerDiscreteScheduler: use_dynamic_shifting needs mu (the image sequence length), which only the FLUX pipeline supplies");
        int n = NumTrainTimesteps;
        var ts = NpLinspace((double)_sigmaMax * n, (double)_sigmaMin * n, numInferenceSteps);
        var sigmas = ts.Select(t => t / n).Select(s => (float)(Shift * s / (1 + (Shift - 1) * s))).ToArray();
        SetSchedule(sigmas);
    }

    /// <summary>
    /// <c>set_timesteps(sigmas=..., mu=...)</c> as the FLUX pipeline calls it: the sigmas (np.float32), time-shifted by
    /// <paramref name="mu"/> with dynamic shifting, else shifted by the config's shift (float32 numpy ops); timesteps =
    /// sigmas * N (float32); a final sigma 0 appended.
    /// </summary>
    public void SetSigmas(double[] sigmas, double mu)
    {
        CheckSteps(sigmas.Length);
        var s32 = sigmas.Select(s => (float)s).ToArray();
        float expMu = (float)Math.Exp(mu), mu32 = (float)mu;
        for (int i = 0; i < s32.Length; i++)
        {
            float s = s32[i];
            s32[i] = !UseDynamicShifting ? ShiftSigma((float)Shift, s)
                : TimeShiftType == "exponential" ? expMu / (expMu + MathF.Pow(1f / s - 1f, 1f))
                : mu32 / (mu32 + MathF.Pow(1f / s - 1f, 1f));
        }
        SetSchedule(s32);
    }

    /// <summary>The FLUX pipeline's default sigmas: np.linspace(1.0, 1 / steps, steps) (float64).</summary>
    public static double[] PipelineSigmas(int steps) => NpLinspace(1.0, 1.0 / steps, steps);

    private void CheckSteps(int steps)
    {
        if (steps < 1) throw new LensException($"the number of inference steps must be positive, not {steps}");
    }

    private void SetSchedule(float[] sigmas)
    {
        int n = NumTrainTimesteps;
        var values = sigmas.Select(s => (double)(s * (float)n)).ToArray();
        var keys = values.Select(t => (long)Math.Floor(t)).ToArray();
        if (keys.Distinct().Count() != keys.Length)
            throw new LensException($"FlowMatchEulerDiscreteScheduler: {sigmas.Length} steps give timesteps closer than 1 apart ({string.Join(", ", values.Take(6))}...), which this implementation keys by their integer part; use fewer steps");
        NumInferenceSteps = sigmas.Length;
        Sigmas.Dispose();
        Sigmas = torch.tensor(sigmas.Append(0f).ToArray(), dtype: ScalarType.Float32).DetachFromDisposeScope();
        _timestepValues = values;
        Timesteps = keys;
        StepIndex = 0;
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        if (NumInferenceSteps is null) throw new InvalidOperationException("FlowMatchEulerDiscreteScheduler: set the timesteps before Step");
        RequireSampleShape(modelOutput, sample);
        int idx = StepIndex;
        if (idx >= Timesteps.Length || Timesteps[idx] != timestep)
            throw new LensException($"FlowMatchEulerDiscreteScheduler: step {idx} expected timestep {(idx < Timesteps.Length ? Timesteps[idx] : -1)}, got {timestep}");
        using var scope = NewDisposeScope();
        var sample32 = sample.to(ScalarType.Float32);
        var dt = Sigmas[idx + 1] - Sigmas[idx];
        var prev = (sample32 + dt * modelOutput).to(modelOutput.dtype);
        StepIndex = idx + 1;
        return prev.MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        Sigmas.Dispose();
        base.Dispose();
    }
}
