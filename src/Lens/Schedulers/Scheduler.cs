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
    public static readonly string[] SupportedClassNames = { "PNDMScheduler", "DDPMScheduler" };

    public int NumTrainTimesteps { get; }
    /// <summary>The training betas (CPU float32).</summary>
    public Tensor Betas { get; }
    /// <summary>cumprod(1 - betas) in float32, as diffusers' <c>alphas_cumprod</c> (CPU).</summary>
    public Tensor AlphasCumprod { get; }

    /// <summary>The inference timesteps, in the order they are used (set by <see cref="SetTimesteps"/>).</summary>
    public long[] Timesteps { get; protected set; }
    public int? NumInferenceSteps { get; protected set; }

    /// <summary>Standard deviation of the initial noise (1.0 for PNDM and DDPM).</summary>
    public virtual double InitNoiseSigma => 1.0;
    /// <summary>diffusers' <c>order</c> (1 for both supported schedulers).</summary>
    public virtual int Order => 1;

    /// <summary>
    /// The batch holds copies of one single-image run (e.g. the lens layers of one prompt and seed): every row gets the
    /// noise that run draws, one draw of batch size 1 a step, as diffusers draws it for a single image. Off by default
    /// (one draw of the whole batch's shape, as diffusers does for a batch).
    /// </summary>
    public bool ShareNoiseAcrossBatch { get; set; }

    protected Scheduler(DiffusersConfig config, string[] supportedBetaSchedules)
    {
        NumTrainTimesteps = config.Int("num_train_timesteps", 1000);
        if (NumTrainTimesteps < 1) throw new LensException($"{config.Path}: num_train_timesteps must be positive");
        Betas = MakeBetas(config, NumTrainTimesteps, supportedBetaSchedules).DetachFromDisposeScope();
        using (var scope = NewDisposeScope())
        {
            var alphas = 1.0 - Betas;
            AlphasCumprod = torch.cumprod(alphas, 0).MoveToOuterDisposeScope();
        }
        AlphasCumprod.DetachFromDisposeScope();
        Timesteps = Enumerable.Range(0, NumTrainTimesteps).Reverse().Select(i => (long)i).ToArray();
    }

    /// <summary>Sets the discrete timesteps used for inference (diffusers' <c>set_timesteps(num_inference_steps)</c>).</summary>
    public abstract void SetTimesteps(int numInferenceSteps);

    /// <summary>Returns the sample unchanged (PNDM/DDPM need no input scaling) — the same tensor object, as diffusers does.</summary>
    public virtual Tensor ScaleModelInput(Tensor sample, long timestep) => sample;

    /// <summary>One reverse-diffusion step: the sample at the previous timestep.</summary>
    /// <param name="generator">for schedulers that add noise (DDPM); a CPU generator reproduces PyTorch's CPU stream</param>
    public abstract Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null);

    /// <summary>Picks the scheduler class named by the config's "_class_name".</summary>
    public static Scheduler FromConfig(DiffusersConfig config)
    {
        var name = config.StrOrNull("_class_name")
                   ?? throw new LensException($"{config.Path}: no '_class_name' (supported schedulers: {string.Join(", ", SupportedClassNames)})");
        return name switch
        {
            "PNDMScheduler" => new PNDMScheduler(config),
            "DDPMScheduler" => new DDPMScheduler(config),
            _ => throw new LensException($"{config.Path}: scheduler '{name}' is not supported (supported schedulers: {string.Join(", ", SupportedClassNames)})"),
        };
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a pipeline's scheduler folder.</summary>
    public static Scheduler FromFolder(string schedulerDir) =>
        FromConfig(DiffusersConfig.Load(Path.Combine(schedulerDir, "scheduler_config.json")));

    // ---- beta schedules (scheduling_pndm.py / scheduling_ddpm.py __init__) ----

    private static Tensor MakeBetas(DiffusersConfig config, int n, string[] supported)
    {
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
        var schedule = config.Str("beta_schedule", "linear");
        if (!supported.Contains(schedule))
            throw new LensException($"{config.Path}: beta_schedule '{schedule}' is not supported (supported: {string.Join(", ", supported)})");
        double betaStart = config.Double("beta_start", 0.0001);
        double betaEnd = config.Double("beta_end", 0.02);
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

    protected static string ValidateChoice(DiffusersConfig config, string key, string dflt, params string[] allowed)
    {
        var v = config.Str(key, dflt);
        if (!allowed.Contains(v))
            throw new LensException($"{config.Path}: '{key}' = {v} is not supported (supported: {string.Join(", ", allowed)})");
        return v;
    }

    /// <summary>Keeps a reference to a tensor beyond the caller's dispose scope (shares storage).</summary>
    protected static Tensor Keep(Tensor t) => t.detach().DetachFromDisposeScope();

    public virtual void Dispose()
    {
        Betas.Dispose();
        AlphasCumprod.Dispose();
        GC.SuppressFinalize(this);
    }
}
