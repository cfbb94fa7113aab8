using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// A diffusers noise scheduler: <see cref="SetTimesteps"/> then, for each t in <see cref="Timesteps"/>,
/// <see cref="ScaleModelInput"/> and <see cref="Step"/>. The schedule tensors (betas, alphas_cumprod) are CPU float32
/// tensors computed with the same torch ops as diffusers; the 0-dim values taken from them are combined with samples
/// on any device, as in diffusers. Built from a scheduler_config.json by <see cref="FromConfig"/>.
/// </summary>
internal abstract class Scheduler : IDisposable
{
    public static readonly string[] SupportedClassNames =
        { "PNDMScheduler", "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler" };

    /// <summary>Short names accepted by <c>--scheduler</c>, each for a diffusers class name.</summary>
    public static readonly IReadOnlyDictionary<string, string> Aliases = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["dpm++"] = "DPMSolverMultistepScheduler",
        ["ddim"] = "DDIMScheduler",
        ["euler"] = "EulerDiscreteScheduler",
        ["pndm"] = "PNDMScheduler",
        ["ddpm"] = "DDPMScheduler",
    };

    /// <summary>Every name <see cref="ResolveClassName"/> accepts, for messages.</summary>
    public static string AcceptedNames =>
        string.Join(", ", SupportedClassNames) + " (or " + string.Join(", ", Aliases.Keys) + ")";

    /// <summary>
    /// A diffusers scheduler class name or a short alias (<see cref="Aliases"/>) to the class name; an unknown name is a
    /// <see cref="LensException"/> listing the accepted names.
    /// </summary>
    public static string ResolveClassName(string name)
    {
        if (SupportedClassNames.Contains(name, StringComparer.Ordinal)) return name;
        if (Aliases.TryGetValue(name, out var cls)) return cls;
        throw new LensException($"unknown scheduler '{name}'; accepted: {AcceptedNames}");
    }

    /// <summary>The diffusers class this scheduler implements.</summary>
    public string ClassName => GetType().Name;

    private readonly SortedDictionary<string, JsonNode?> _effective = new(StringComparer.Ordinal);
    /// <summary>
    /// The configuration this scheduler runs with, as diffusers' <c>scheduler.config</c> holds its __init__ arguments: each
    /// key from the config file where present, else the class's diffusers default.
    /// </summary>
    public IReadOnlyDictionary<string, JsonNode?> EffectiveConfig => _effective;

    public int NumTrainTimesteps { get; }
    /// <summary>The training betas (CPU float32).</summary>
    public Tensor Betas { get; private set; }
    /// <summary>cumprod(1 - betas) in float32, as diffusers' <c>alphas_cumprod</c> (CPU).</summary>
    public Tensor AlphasCumprod { get; }

    /// <summary>The inference timesteps, in the order they are used (set by <see cref="SetTimesteps"/>).</summary>
    public long[] Timesteps { get; protected set; }
    public int? NumInferenceSteps { get; protected set; }

    /// <summary>Standard deviation of the initial noise (1.0 except for EulerDiscreteScheduler, whose value depends on the
    /// inference sigmas: read it after <see cref="SetTimesteps"/>, as the pipelines do).</summary>
    public virtual double InitNoiseSigma => 1.0;
    /// <summary>
    /// Whether a schedule may hold t = num_train_timesteps (DPM-Solver++ with leading spacing and steps_offset, as
    /// diffusers runs it: its sigmas are interpolated); the others index alphas_cumprod[t] and fail there, diffusers too.
    /// </summary>
    internal virtual bool TakesTimestepAtTrainCount => false;

    /// <summary>diffusers' <c>order</c> (1 for every supported scheduler).</summary>
    public virtual int Order => 1;

    /// <summary>
    /// The timesteps as diffusers' <c>scheduler.timesteps</c> holds them (what the UNet is given), in the order of
    /// <see cref="Timesteps"/>. Integral for every scheduler except EulerDiscreteScheduler (float32 values, e.g. 957.375
    /// with linspace spacing); <see cref="Timesteps"/> then holds their integer parts, distinct, as the loop's keys.
    /// </summary>
    public virtual double[] TimestepValues => Array.ConvertAll(Timesteps, t => (double)t);
    /// <summary>The dtype of diffusers' <c>scheduler.timesteps</c>: int64, or float32 for EulerDiscreteScheduler.</summary>
    public virtual ScalarType TimestepDType => ScalarType.Int64;


    /// <summary>
    /// The batch holds several single-prompt calls (lens layers, images per prompt): each row's step noise is drawn as
    /// its own call draws it (<see cref="NoisePlan"/>), and the generator passed to <see cref="Step"/> is not used.
    /// Null: one draw of the whole batch's shape from that generator, as diffusers draws it for a batch.
    /// </summary>
    public NoisePlan? BatchNoise { get; set; }

    /// <param name="rescaleZeroSnr">the class has <c>rescale_betas_zero_snr</c> (read and applied here); null: it has not</param>
    /// <param name="clampLastAlphaCumprod">with rescale_betas_zero_snr: alphas_cumprod[-1] = 2**-24 (Euler, DPM-Solver)</param>
    protected Scheduler(DiffusersConfig config, string[] supportedBetaSchedules, bool rescaleZeroSnr = false, bool clampLastAlphaCumprod = false)
    {
        NumTrainTimesteps = Opt(config, "num_train_timesteps", 1000);
        if (NumTrainTimesteps < 1) throw new LensException($"{config.Path}: num_train_timesteps must be positive");
        Betas = MakeBetas(config, NumTrainTimesteps, supportedBetaSchedules).DetachFromDisposeScope();
        bool rescale = rescaleZeroSnr && Opt(config, "rescale_betas_zero_snr", false);
        using (var scope = NewDisposeScope())
        {
            if (rescale)
            {
                var rescaled = RescaleZeroTerminalSnr(Betas).MoveToOuterDisposeScope();
                Betas.Dispose();
                Betas = rescaled.DetachFromDisposeScope();
            }
            // 1 - betas as a tensor op: TorchSharp's double - Tensor goes through a temporary Scalar, and CI once read it
            // freed (libtorch's toFloat check failed in a parallel test run); the same numbers (-b + 1 == 1 - b exactly)
            var alphas = torch.ones_like(Betas).sub_(Betas);
            var cumprod = torch.cumprod(alphas, 0);
            // Close to 0 without being 0 so the first sigma is not inf (FP16's smallest positive subnormal)
            if (rescale && clampLastAlphaCumprod) cumprod[NumTrainTimesteps - 1] = torch.tensor(Math.Pow(2, -24), dtype: ScalarType.Float32);
            AlphasCumprod = cumprod.MoveToOuterDisposeScope();
        }
        AlphasCumprod.DetachFromDisposeScope();
        Timesteps = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(i => (long)i).ToArray();
    }

    /// <summary>
    /// A scheduler without a beta schedule (flow matching): only num_train_timesteps is read; <see cref="Betas"/> and
    /// <see cref="AlphasCumprod"/> are empty.
    /// </summary>
    protected Scheduler(DiffusersConfig config)
    {
        NumTrainTimesteps = Opt(config, "num_train_timesteps", 1000);
        if (NumTrainTimesteps < 1) throw new LensException($"{config.Path}: num_train_timesteps must be positive");
        Betas = torch.empty(0, dtype: ScalarType.Float32).DetachFromDisposeScope();
        AlphasCumprod = torch.empty(0, dtype: ScalarType.Float32).DetachFromDisposeScope();
        Timesteps = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(i => (long)i).ToArray();
    }

    /// <summary>
    /// diffusers' <c>rescale_zero_terminal_snr(betas)</c> (Algorithm 1 of arXiv 2305.08891), with the same float32 torch ops.
    /// </summary>
    public static Tensor RescaleZeroTerminalSnr(Tensor betas)
    {
        using var scope = NewDisposeScope();
        var alphas = 1.0 - betas;
        var alphasCumprod = torch.cumprod(alphas, 0);
        var alphasBarSqrt = alphasCumprod.sqrt();
        var sqrt0 = alphasBarSqrt[0].clone();
        var sqrtT = alphasBarSqrt[-1].clone();
        alphasBarSqrt.sub_(sqrtT);
        alphasBarSqrt.mul_(sqrt0 / (sqrt0 - sqrtT));
        var alphasBar = alphasBarSqrt.pow(2);
        var ratios = alphasBar.slice(0, 1, alphasBar.shape[0], 1) / alphasBar.slice(0, 0, alphasBar.shape[0] - 1, 1);
        alphas = torch.cat(new[] { alphasBar.slice(0, 0, 1, 1), ratios });
        return (1 - alphas).MoveToOuterDisposeScope();
    }

    // ---- config options, recorded in EffectiveConfig ----

    protected int Opt(DiffusersConfig c, string key, int dflt) { var v = c.Int(key, dflt); _effective[key] = JsonValue.Create(v); return v; }
    protected bool Opt(DiffusersConfig c, string key, bool dflt) { var v = c.Bool(key, dflt); _effective[key] = JsonValue.Create(v); return v; }
    protected double Opt(DiffusersConfig c, string key, double dflt) { var v = c.Double(key, dflt); _effective[key] = JsonValue.Create(v); return v; }
    protected string Opt(DiffusersConfig c, string key, string dflt) { var v = c.Str(key, dflt); _effective[key] = JsonValue.Create(v); return v; }
    protected string? OptOrNull(DiffusersConfig c, string key) { var v = c.StrOrNull(key); _effective[key] = v is null ? null : JsonValue.Create(v); return v; }
    protected double? OptDoubleOrNull(DiffusersConfig c, string key) { var v = c.DoubleOrNull(key); _effective[key] = v is null ? null : JsonValue.Create(v.Value); return v; }
    /// <summary>Records a value the class set itself (diffusers' <c>register_to_config</c>, e.g. algorithm_type deis -> dpmsolver++).</summary>
    protected void Record(string key, string value) => _effective[key] = JsonValue.Create(value);

    /// <summary>A boolean option whose true value this implementation does not support: true is an error naming it.</summary>
    protected void RejectTrue(DiffusersConfig c, string key)
    {
        if (Opt(c, key, false))
            throw new LensException($"{c.Path}: '{key}' = true is not supported by {GetType().Name} here (only false)");
    }

    /// <summary>Sets the discrete timesteps used for inference (diffusers' <c>set_timesteps(num_inference_steps)</c>).</summary>
    public abstract void SetTimesteps(int numInferenceSteps);

    /// <summary>Returns the sample unchanged (PNDM/DDPM need no input scaling) — the same tensor object, as diffusers does.</summary>
    public virtual Tensor ScaleModelInput(Tensor sample, long timestep) => sample;

    /// <summary>One reverse-diffusion step: the sample at the previous timestep.</summary>
    /// <param name="generator">for schedulers that add noise (DDPM); a CPU generator reproduces PyTorch's CPU stream</param>
    public abstract Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null);

    /// <summary>
    /// Picks the scheduler class named by the config's "_class_name", or <paramref name="className"/> when given — then
    /// built as diffusers' <c>SchedulerClass.from_config(pipe.scheduler.config)</c> does: each __init__ argument of the
    /// class from the config where the file has it, else the class's own default (the defaults the model's own class
    /// filled in are not carried over: diffusers drops its <c>_use_default_values</c>); keys the class does not take are
    /// ignored.
    /// </summary>
    /// <param name="className">a diffusers class name or an alias (<see cref="ResolveClassName"/>); null: the config's own</param>
    public static Scheduler FromConfig(DiffusersConfig config, string? className = null)
    {
        var name = className is null
            ? config.StrOrNull("_class_name") ?? throw new LensException($"{config.Path}: no '_class_name' (supported schedulers: {string.Join(", ", SupportedClassNames)})")
            : ResolveClassName(className);
        return name switch
        {
            "PNDMScheduler" => new PNDMScheduler(config),
            "DDPMScheduler" => new DDPMScheduler(config),
            "DDIMScheduler" => new DDIMScheduler(config),
            "EulerDiscreteScheduler" => new EulerDiscreteScheduler(config),
            "DPMSolverMultistepScheduler" => new DPMSolverMultistepScheduler(config),
            "FlowMatchEulerDiscreteScheduler" => new FlowMatchEulerDiscreteScheduler(config),
            _ => throw new LensException($"{config.Path}: scheduler '{name}' is not supported (supported schedulers: {string.Join(", ", SupportedClassNames)})"),
        };
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a pipeline's scheduler folder.</summary>
    public static Scheduler FromFolder(string schedulerDir) =>
        FromConfig(DiffusersConfig.Load(Path.Combine(schedulerDir, "scheduler_config.json")));

    // ---- beta schedules (scheduling_pndm.py / scheduling_ddpm.py __init__) ----

    private Tensor MakeBetas(DiffusersConfig config, int n, string[] supported)
    {
        var schedule = Opt(config, "beta_schedule", "linear");
        double betaStart = Opt(config, "beta_start", 0.0001);
        double betaEnd = Opt(config, "beta_end", 0.02);
        _effective["trained_betas"] = config.Has("trained_betas") ? config.Root["trained_betas"]!.DeepClone() : null;
        if (config.Has("trained_betas"))
        {
            double[] trained;
            try { trained = config.Root["trained_betas"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            { throw new LensException($"{config.Path}: 'trained_betas' is not a list of numbers"); }
            // torch.tensor(trained_betas, dtype=torch.float32); alphas_cumprod then has the list's length
            if (trained.Length != n)
                throw new LensException($"{config.Path}: 'trained_betas' has {trained.Length} entries but num_train_timesteps is {n}");
            return torch.tensor(trained.Select(b => (float)b).ToArray(), dtype: ScalarType.Float32);
        }
        if (!supported.Contains(schedule))
            throw new LensException($"{config.Path}: beta_schedule '{schedule}' is not supported (supported: {string.Join(", ", supported)})");
        switch (schedule)
        {
            case "linear":
                return torch.linspace(betaStart, betaEnd, n, dtype: ScalarType.Float32);
            case "scaled_linear":
            {
                // torch.linspace(beta_start**0.5, beta_end**0.5, N, dtype=float32) ** 2
                using var lin = torch.linspace(Math.Pow(betaStart, 0.5), Math.Pow(betaEnd, 0.5), n, dtype: ScalarType.Float32);
                return lin.pow(2);
            }
            case "squaredcos_cap_v2":
                return BetasForAlphaBarCosine(n);
            default:
                throw new LensException($"{config.Path}: beta_schedule '{schedule}' is not supported");
        }
    }

    /// <summary>
    /// diffusers' <c>betas_for_alpha_bar(N, max_beta=0.999, "cosine")</c>: computed in Python floats (double), then
    /// torch.tensor(betas, dtype=float32).
    /// </summary>
    public static Tensor BetasForAlphaBarCosine(int n, double maxBeta = 0.999)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[n];
        for (int i = 0; i < n; i++)
        {
            double t1 = (double)i / n;
            double t2 = (double)(i + 1) / n;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), maxBeta);
        }
        return torch.tensor(betas, dtype: ScalarType.Float32);
    }

    /// <summary>
    /// DDPM's and DDIM's <c>set_timesteps(num_inference_steps)</c> (the same code in both diffusers classes): checks the
    /// count, then the discrete timesteps of <paramref name="spacing"/> ("linspace", "leading" with
    /// <paramref name="stepsOffset"/>, "trailing"), in the order they are used.
    /// </summary>
    protected long[] SpacedTimesteps(int numInferenceSteps, string spacing, int stepsOffset)
    {
        if (numInferenceSteps < 1) throw new LensException($"the number of inference steps must be positive, not {numInferenceSteps}");
        int n = NumTrainTimesteps;
        if (numInferenceSteps > n)
            throw new LensException($"num_inference_steps {numInferenceSteps} cannot be larger than num_train_timesteps {n}");
        switch (spacing)
        {
            case "linspace":
                // np.linspace(0, N - 1, steps).round()[::-1].astype(np.int64)
                return NpLinspace(0, n - 1, numInferenceSteps).Select(NpRound).Reverse().ToArray();
            case "leading":
            {
                // (np.arange(0, steps) * (N // steps)).round()[::-1].astype(np.int64) + steps_offset
                int ratio = n / numInferenceSteps;
                return Enumerable.Range(0, numInferenceSteps).Reverse().Select(i => (long)i * ratio + stepsOffset).ToArray();
            }
            default: // trailing
            {
                // np.round(np.arange(N, 0, -N / steps)).astype(np.int64) - 1
                double ratio = (double)n / numInferenceSteps;
                return NpArange(n, 0, -ratio).Select(t => NpRound(t) - 1).ToArray();
            }
        }
    }

    // ---- numpy timestep helpers ----

    /// <summary>numpy.round (half to even).</summary>
    protected static long NpRound(double x) => (long)Math.Round(x, MidpointRounding.ToEven);

    /// <summary>np.linspace(start, stop, num) (endpoint=True): i * ((stop - start) / (num - 1)) + start, last = stop.</summary>
    protected static double[] NpLinspace(double start, double stop, int num)
    {
        var y = new double[num];
        if (num == 1) { y[0] = start; return y; }
        double step = (stop - start) / (num - 1);
        for (int i = 0; i < num; i++) y[i] = i * step + start;
        y[num - 1] = stop;
        return y;
    }

    /// <summary>np.arange(start, stop, step) for floats: length ceil((stop - start) / step), values start + i * delta with
    /// delta = (start + step) - start (numpy fills from the first two elements).</summary>
    protected static double[] NpArange(double start, double stop, double step)
    {
        long len = (long)Math.Ceiling((stop - start) / step);
        if (len <= 0) return Array.Empty<double>();
        var y = new double[len];
        y[0] = start;
        if (len > 1)
        {
            double delta = (start + step) - start;
            y[1] = start + step;
            for (long i = 2; i < len; i++) y[i] = start + i * delta;
        }
        return y;
    }

    protected string ValidateChoice(DiffusersConfig config, string key, string dflt, params string[] allowed)
    {
        var v = Opt(config, key, dflt);
        if (!allowed.Contains(v))
            throw new LensException($"{config.Path}: '{key}' = {v} is not supported (supported: {string.Join(", ", allowed)})");
        return v;
    }

    // ---- shared step pieces ----

    /// <summary>
    /// randn_tensor(like.shape, generator=generator, device=like.device, dtype=dtype or like.dtype): a CPU generator draws
    /// on the CPU and the noise is moved to the device. With <see cref="BatchNoise"/> each call's rows are drawn as that
    /// call draws them.
    /// </summary>
    protected Tensor DrawNoise(Tensor like, Generator? generator, ScalarType? dtype = null)
    {
        var device = like.device;
        if (BatchNoise is { } plan)
        {
            if (plan.BatchRows != like.shape[0])
                throw new InvalidOperationException($"the noise plan has {plan.BatchRows} rows, the batch {like.shape[0]}");
            return plan.Draw(like.shape[1..], dtype ?? like.dtype, device);
        }
        var randDevice = device;
        if (generator is not null)
        {
            var genType = generator.device.type;
            if (genType != device.type)
            {
                if (genType == DeviceType.CPU) randDevice = torch.CPU;
                else throw new LensException($"cannot generate a {device.type} tensor from a generator on {genType}");
            }
        }
        var noise = torch.randn(like.shape, dtype: dtype ?? like.dtype, device: randDevice, generator: generator);
        return noise.device.type == device.type && noise.device.index == device.index ? noise : noise.to(device);
    }

    /// <summary>
    /// <c>_threshold_sample</c> (dynamic thresholding, Imagen): per sample, s = quantile(|x|, dynamic_thresholding_ratio)
    /// clamped to [1, sample_max_value]; x = clamp(x, -s, s) / s. Computed in float32 for half inputs.
    /// </summary>
    protected Tensor ThresholdSample(Tensor sample, double dynamicThresholdingRatio, double sampleMaxValue)
    {
        var dtype = sample.dtype;
        long batch = sample.shape[0], channels = sample.shape[1];
        var remaining = sample.shape.Skip(2).ToArray();
        if (dtype is not (ScalarType.Float32 or ScalarType.Float64)) sample = sample.to(ScalarType.Float32);

        long rest = remaining.Aggregate(1L, (a, b) => a * b);
        sample = sample.reshape(batch, channels * rest);
        var absSample = sample.abs();
        // torch.quantile(abs, float q, dim=1): q becomes a scalar tensor of the input's dtype
        var s = torch.quantile(absSample, QuantileTensor(absSample, dynamicThresholdingRatio), dim: 1);
        s = torch.clamp(s, min: 1, max: sampleMaxValue);
        s = s.unsqueeze(1);
        sample = torch.clamp(sample, -s, s) / s;
        sample = sample.reshape(new[] { batch, channels }.Concat(remaining).ToArray());
        return sample.to(dtype);
    }

    private Tensor? _quantile;

    /// <summary>The quantile as a 0-dim tensor of the input's dtype on its device, made once (not uploaded every step).</summary>
    private Tensor QuantileTensor(Tensor like, double q)
    {
        if (_quantile is null || _quantile.dtype != like.dtype || _quantile.device_type != like.device_type || _quantile.device_index != like.device_index)
        {
            _quantile?.Dispose();
            _quantile = torch.tensor(q, dtype: like.dtype, device: like.device).DetachFromDisposeScope();
        }
        return _quantile;
    }

    /// <summary>Fails clearly where a step gets a model output of another shape than the sample (e.g. IF's predicted
    /// variance, which only DDPMScheduler and DPMSolverMultistepScheduler take; diffusers' step fails on it too).</summary>
    protected void RequireSampleShape(Tensor modelOutput, Tensor sample)
    {
        if (!modelOutput.shape.SequenceEqual(sample.shape))
            throw new LensException($"{ClassName}.step: the model output has shape [{string.Join(", ", modelOutput.shape)}] but the sample [{string.Join(", ", sample.shape)}]" +
                                    (modelOutput.shape.Length > 1 && sample.shape.Length > 1 && modelOutput.shape[1] == 2 * sample.shape[1]
                                        ? $" (the model predicts its variance, variance_type learned/learned_range, which {ClassName} cannot use; use DDPMScheduler or DPMSolverMultistepScheduler)"
                                        : ""));
    }

    /// <summary>Keeps a reference to a tensor beyond the caller's dispose scope (shares storage).</summary>
    protected static Tensor Keep(Tensor t) => t.detach().DetachFromDisposeScope();

    public virtual void Dispose()
    {
        _quantile?.Dispose();
        _quantile = null;
        Betas.Dispose();
        AlphasCumprod.Dispose();
        GC.SuppressFinalize(this);
    }
}
