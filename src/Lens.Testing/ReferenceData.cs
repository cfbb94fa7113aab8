using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Testing;

/// <summary>
/// One reference folder written by <c>make_reference.py</c> (<c>lens-make-reference real</c>) with real diffusers:
/// <c>reference.json</c> (prompt, seed, steps, layers, the model, the device and dtype diffusers ran with) and
/// <c>tensors.safetensors</c> (token ids, every layer's hidden state and lens embedding, the first UNet call, the images).
/// Reads its tensors, resolves its model (or says why it cannot run here: <see cref="SkipReason"/>) and asserts the port's
/// values against it with the stated tolerances (<see cref="AssertMatches"/>).
/// </summary>
public sealed class ReferenceData : IDisposable
{
    /// <summary>The run name: the folder's name, plus "@cuda" when a CPU reference is replayed on CUDA.</summary>
    public string Name { get; }
    /// <summary>The reference folder.</summary>
    public string Folder { get; }
    /// <summary>reference.json as written by make_reference.py.</summary>
    public JsonObject Json { get; }
    /// <summary>"sd" or "if" (reference.json "kind").</summary>
    public string Kind { get; }
    /// <summary>
    /// The model folder named by reference.json model.path (relative to the repository root), or null when absent.
    /// Its weights files are verified against model.weights_sha256 on first use (<see cref="ReferenceWeights"/>): a
    /// reference is never compared against other weights than it was recorded from.
    /// </summary>
    public string? ModelPath
    {
        get
        {
            if (_modelPath is not null && !_weightsVerified)
            {
                ReferenceWeights.Verify(Name, Kind, _modelPath, Json["model"]?["weights_sha256"]?.AsObject(), Variant);
                _weightsVerified = true;
            }
            return _modelPath;
        }
    }
    private readonly string? _modelPath;
    private bool _weightsVerified;
    /// <summary>The weights variant the reference was made with (reference.json model.variant), or null.</summary>
    public string? Variant => Json["model"]?["variant"]?.GetValue<string>();
    private SafetensorsFile? _tensors;

    /// <summary>reference.json "kind" of a DeepFloyd IF stage II reference (fixtures/make_reference.py if2).</summary>
    public const string Stage2Kind = "if2";

    /// <summary>Suffix of a run name that replays a CPU float32 reference on CUDA (float32, TF32 off).</summary>
    public const string OnCuda = "@cuda";

    private ReferenceData(string folder, string? runOn = null)
    {
        Folder = folder;
        Name = System.IO.Path.GetFileName(folder) + (runOn is null ? "" : "@" + runOn);
        Json = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(folder, "reference.json")))!.AsObject();
        Kind = Json["kind"]?.GetValue<string>() ?? "";
        RecordedDevice = Json["generated_by"]?["device"]?.GetValue<string>() ?? "cpu";
        Device = runOn ?? RecordedDevice;
        (_modelPath, SkipReason) = ResolveModel(Json["model"]?.AsObject());
        if (SkipReason is null && Device == "cuda" && !TorchSharp.torch.cuda.is_available())
            SkipReason = RecordedDevice == "cuda"
                ? $"{Name} was recorded on CUDA and needs a CUDA device (none is visible to TorchSharp here)"
                : $"{Name} replays a CPU reference on CUDA and needs a CUDA device (none is visible to TorchSharp here)";
        if (SkipReason is null && Device == "cuda")
        {
            // run with the TF32 settings diffusers ran with (global flags; every CUDA reference records the same);
            // CPU references replayed on CUDA run strict float32 (no TF32), as CPU float32 math is
            var g = Json["generated_by"]!;
            TorchSharp.torch.backends.cudnn.allow_tf32 = RecordedDevice == "cuda" && (g["cudnn_allow_tf32"]?.GetValue<bool>() ?? true);
            TorchSharp.torch.backends.cuda.matmul.allow_tf32 = RecordedDevice == "cuda" && (g["matmul_allow_tf32"]?.GetValue<bool>() ?? false);
        }
    }

    /// <summary>
    /// The model folder of a reference: model.path (relative to <see cref="RepoRoot"/>), else the folder named by the
    /// environment variable model.env, else the Hugging Face cache snapshot of model.hub_id at model.revision.
    /// </summary>
    private static (string? Path, string? Skip) ResolveModel(JsonObject? model)
    {
        if (model is null) return (null, "reference.json names no model");
        var tried = new List<string>();
        if (model["path"]?.GetValue<string>() is string p)
        {
            var full = System.IO.Path.IsPathRooted(p) ? p : System.IO.Path.Combine(RepoRoot, p);
            if (File.Exists(System.IO.Path.Combine(full, "model_index.json"))) return (full, null);
            tried.Add(full);
        }
        if (model["env"]?.GetValue<string>() is string env)
        {
            var v = Environment.GetEnvironmentVariable(env);
            if (!string.IsNullOrEmpty(v) && File.Exists(System.IO.Path.Combine(v, "model_index.json"))) return (v, null);
            tried.Add($"${env}" + (string.IsNullOrEmpty(v) ? " (unset)" : $" = {v}"));
        }
        if (model["hub_id"]?.GetValue<string>() is string hub)
        {
            var home = Environment.GetEnvironmentVariable("HF_HUB_CACHE")
                ?? System.IO.Path.Combine(Environment.GetEnvironmentVariable("HF_HOME")
                    ?? System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface"), "hub");
            var snap = System.IO.Path.Combine(home, "models--" + hub.Replace("/", "--"), "snapshots", model["revision"]?.GetValue<string>() ?? "main");
            if (File.Exists(System.IO.Path.Combine(snap, "model_index.json"))) return (snap, null);
            tried.Add(snap);
        }
        return (null, $"the model's weights are not on this machine (looked at {string.Join(", ", tried)})");
    }

    /// <summary>Why this reference cannot run here (weights or CUDA absent), or null.</summary>
    public string? SkipReason { get; }

    /// <summary>Skips the running xunit test with <see cref="SkipReason"/> when the reference cannot run here.</summary>
    public void SkipIfUnavailable()
    {
        if (SkipReason is string why) Assert.Skip(why);
    }

    /// <summary>The prompt diffusers ran.</summary>
    public string Prompt => Json["prompt"]!.GetValue<string>();
    /// <summary>The negative prompt ("" when none).</summary>
    public string NegativePrompt => Json["negative_prompt"]?.GetValue<string>() ?? "";
    /// <summary>The seed of diffusers' CPU generator.</summary>
    public long Seed => Json["seed"]!.GetValue<long>();
    /// <summary>Denoising steps.</summary>
    public int Steps => Json["steps"]!.GetValue<int>();
    /// <summary>Guidance scale.</summary>
    public double Guidance => Json["guidance"]!.GetValue<double>();
    /// <summary>Image height in pixels.</summary>
    public int Height => Json["height"]!.GetValue<int>();
    /// <summary>Image width in pixels.</summary>
    public int Width => Json["width"]!.GetValue<int>();
    /// <summary>Number of text-encoder layers.</summary>
    public int NumLayers => Json["num_layers"]!.GetValue<int>();
    /// <summary>The lens layers whose images the reference holds (0-based).</summary>
    public int[] Layers => Json["layers"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
    /// <summary>IF: the clean_caption the reference used; SD: null.</summary>
    public bool? CleanCaption => Kind == "if" ? Json["clean_caption"]?.GetValue<bool>() ?? true : null;
    /// <summary>The device diffusers recorded the reference on.</summary>
    public string RecordedDevice { get; }
    /// <summary>The device this run uses: the recorded one, or CUDA for a CPU reference replayed there ("name@cuda").</summary>
    public string Device { get; }
    /// <summary>The dtype diffusers ran in: "float32", "float16" or "bfloat16".</summary>
    public string DType => Json["generated_by"]?["dtype"]?.GetValue<string>() ?? "float32";

    /// <summary>float16 / bfloat16: judged by <see cref="LowPrecision"/>'s error-ratio criterion, not by tolerances.</summary>
    public bool IsLowPrecision => DType != "float32";

    /// <summary>
    /// Float32 tolerances by device: on the CPU the port and PyTorch differ only by kernel rounding (rel L2 1e-5); on
    /// CUDA (TF32 off) kernels accumulate in other orders (rel L2 1e-4, images within 3 levels). Low-precision
    /// references are not judged by these (see <see cref="LowPrecision"/>).
    /// </summary>
    public Tolerances Tol => Device == "cpu"
        ? new Tolerances(HiddenRel: 1e-5, HiddenAbs: 1e-4, ImageLevels: 2)
        : new Tolerances(HiddenRel: 1e-4, HiddenAbs: 1e-3, ImageLevels: 3);

    private LowPrecisionTruth? _truth;
    /// <summary>The float32 truth and diffusers' own low-precision errors of a float16/bfloat16 reference.</summary>
    public LowPrecisionTruth LowPrecision => _truth ??= IsLowPrecision
        ? new LowPrecisionTruth(this)
        : throw new InvalidOperationException($"{Name} is a float32 reference");

    /// <summary>
    /// Asserts that <paramref name="actual"/> (the port's value of reference tensor <paramref name="key"/>) matches:
    /// float32 references by <see cref="Tol"/> (rel L2 and max |diff| scaled by max(1, max|ref|)); low-precision ones
    /// by the error-ratio criterion against the float32 truth (<see cref="LowPrecisionTruth.AssertWithinCriterion"/>).
    /// Returns the relative L2 error against what it was compared with.
    /// </summary>
    /// <param name="rowDim">float32: also check every slice along this dim (e.g. 1 of [B, T, D]: each token) against
    /// <see cref="Tol"/>.HiddenRel x <see cref="RowFactor"/>, so an error in one token cannot hide in the whole norm</param>
    public double AssertMatches(string key, Tensor actual, ITestOutputHelper? log = null, Tensor? expected = null, int? rowDim = null)
    {
        if (IsLowPrecision) return LowPrecision.AssertWithinCriterion(key, actual, log);
        using var exp = expected is null ? Read(key) : null;
        var (maxAbs, refMax, rel) = Compare(actual.cpu(), expected ?? exp!);
        double allowed = Tol.HiddenAbs * Math.Max(1, refMax);
        log?.WriteLine($"{Name} {key}: rel L2 {rel:E2} (tolerance {Tol.HiddenRel:E0}), max |diff| {maxAbs:E2} (tolerance {allowed:E2})");
        Assert.True(rel <= Tol.HiddenRel && maxAbs <= allowed,
            $"{Name} {key}: rel L2 {rel:E2}, max |diff| {maxAbs:E2} (ref max {refMax:E2}) over tolerance (rel {Tol.HiddenRel:E0}, abs {allowed:E2})");
        if (rowDim is int dim)
        {
            var (rowRel, row, _, _) = RowCompare.Worst(actual.cpu(), expected ?? exp!, dim);
            Assert.True(rowRel <= Tol.HiddenRel * RowFactor,
                $"{Name} {key}: slice {row} of dim {dim} rel L2 {rowRel:E2} over tolerance {Tol.HiddenRel * RowFactor:E1}");
        }
        return rel;
    }

    /// <summary>Per-slice tolerance factor over the whole-tensor one: 1 on the CPU; 4 on CUDA, where a single token's
    /// rounding differs more.</summary>
    public double RowFactor => Device == "cpu" ? 1 : 4;

    /// <summary>On CUDA: the GPU, its driver and the flags this run used, for the test's output.</summary>
    public string RanOn => Device == "cuda"
        ? $"ran on {GpuInfo.Describe()}, libtorch {TorchRuntime.Source} (cudnn.allow_tf32={TorchSharp.torch.backends.cudnn.allow_tf32}, matmul.allow_tf32={TorchSharp.torch.backends.cuda.matmul.allow_tf32})"
        : "ran on the CPU";

    /// <summary>Bit-for-bit equality: same shape, same dtype, every element equal.</summary>
    public static bool Identical(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dtype != b.dtype) return false;
        using var eq = a.eq(b);
        using var all = eq.all();
        return all.item<bool>();
    }

    /// <summary>Reads an integer tensor (token ids, timesteps) as a flat array.</summary>
    public long[] ReadLongs(string key)
    {
        using var t = Read(key);
        return t.to(ScalarType.Int64).flatten().data<long>().ToArray();
    }

    private static string? _repoRoot;

    /// <summary>
    /// The folder that reference.json's relative model.path and the default <see cref="ReferencesDir"/> are relative to:
    /// set it, else $LENS_REPO_ROOT, else the first folder above the test binaries (then the working directory) that holds
    /// a DiffusionLens.sln, else a .git (the consumer's repository root).
    /// </summary>
    public static string RepoRoot
    {
        get => _repoRoot ??= FindRepoRoot();
        set => _repoRoot = value;
    }

    private static string FindRepoRoot()
    {
        var env = Environment.GetEnvironmentVariable("LENS_REPO_ROOT");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return env;
        var starts = new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() };
        foreach (var marker in new[] { "DiffusionLens.sln", ".git" })
            foreach (var start in starts)
                for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                {
                    var m = System.IO.Path.Combine(d.FullName, marker);
                    if (File.Exists(m) || Directory.Exists(m)) return d.FullName;
                }
        throw new InvalidOperationException($"no repository root (DiffusionLens.sln or .git) above {AppContext.BaseDirectory} or {Directory.GetCurrentDirectory()}: set LENS_REPO_ROOT or ReferenceData.RepoRoot");
    }

    private static string? _referencesDir;

    /// <summary>The folder of reference folders that <see cref="Open"/> and <see cref="All"/> use by default:
    /// set it, else <see cref="RepoRoot"/>/fixtures/references.</summary>
    public static string ReferencesDir
    {
        get => _referencesDir ?? System.IO.Path.Combine(RepoRoot, "fixtures", "references");
        set => _referencesDir = value;
    }

    /// <summary>Opens a reference by folder name under <paramref name="referencesDir"/> (default <see cref="ReferencesDir"/>);
    /// "name@cuda" replays a CPU float32 reference on CUDA.</summary>
    public static ReferenceData Open(string name, string? referencesDir = null)
    {
        var dir = referencesDir ?? ReferencesDir;
        var at = name.IndexOf('@', StringComparison.Ordinal);
        return at < 0 || name[at..] != OnCuda
            ? new(System.IO.Path.Combine(dir, name))
            : new(System.IO.Path.Combine(dir, name[..at]), "cuda");
    }

    /// <summary><see cref="Open"/>, then skips the running test with the reason when the reference cannot run here.</summary>
    public static ReferenceData OpenOrSkip(string name, string? referencesDir = null)
    {
        var r = Open(name, referencesDir);
        r.SkipIfUnavailable();
        return r;
    }

    /// <summary>
    /// Opens the reference folder at <paramref name="folder"/>, or skips the running xunit test when its
    /// <c>reference.json</c> is not recorded yet, saying how to record it (<paramref name="howToRecord"/>, e.g. "run
    /// `python3 fixtures/make_reference.py flux` ... and commit ..."). Whether the reference can run here is left to
    /// <see cref="SkipIfUnavailable"/>.
    /// </summary>
    public static ReferenceData OpenRecordedOrSkip(string folder, string howToRecord)
    {
        if (!File.Exists(System.IO.Path.Combine(folder, "reference.json")))
            Assert.Skip($"{folder}/reference.json is not recorded yet: {howToRecord}");
        return OpenFolder(folder);
    }

    /// <summary>Opens the reference folder at <paramref name="folder"/> (any path).</summary>
    public static ReferenceData OpenFolder(string folder)
    {
        if (!File.Exists(System.IO.Path.Combine(folder, "reference.json")))
            throw new FileNotFoundException($"{folder} is not a reference folder (no reference.json; make one with lens-make-reference real)", System.IO.Path.Combine(folder, "reference.json"));
        return new(folder);
    }

    /// <summary>
    /// Every reference run under <paramref name="referencesDir"/> (default <see cref="ReferencesDir"/>): each folder
    /// (*/reference.json) on the device it was recorded on, and each CPU float32 reference once more on CUDA ("name@cuda",
    /// skipped where CUDA is absent): float32 CPU references are hardware-independent to about 1e-6, so they are the CUDA
    /// float32 gate too. Listed whether or not the model is here; <paramref name="kind"/> "sd" or "if" filters.
    /// </summary>
    public static IEnumerable<string> All(string? kind = null, string? referencesDir = null)
    {
        var dir = referencesDir ?? ReferencesDir;
        if (!Directory.Exists(dir)) yield break;
        foreach (var d in Directory.GetDirectories(dir).OrderBy(d => d, StringComparer.Ordinal))
        {
            if (!File.Exists(System.IO.Path.Combine(d, "reference.json"))) continue;
            var r = new ReferenceData(d);
            // IF stage II references ("if2") hold another pipeline's data: only listed when asked for by kind
            if (kind is null ? r.Kind == Stage2Kind : r.Kind != kind) continue;
            yield return r.Name;
            if (r.RecordedDevice == "cpu" && !r.IsLowPrecision) yield return r.Name + OnCuda;
        }
    }

    internal SafetensorsFile Tensors => _tensors ??= new SafetensorsFile(System.IO.Path.Combine(Folder, Json["tensors"]?.GetValue<string>() ?? "tensors.safetensors"));

    /// <summary>Whether the reference holds tensor <paramref name="key"/>.</summary>
    public bool Has(string key) => Tensors.Entries.ContainsKey(key);

    /// <summary>Reads one reference tensor (CPU, its stored dtype).</summary>
    public Tensor Read(string key) => Tensors.Read(key);

    /// <summary>A component folder of the model (unet, vae, text_encoder, ...).</summary>
    public string Component(string name) =>
        System.IO.Path.Combine(ModelPath ?? throw new InvalidOperationException($"{Name}: no model folder"), name);

    /// <summary>Nothing to release (tensors are read on demand); kept so a test can write <c>using var r = ...</c>.</summary>
    public void Dispose() { }

    /// <summary>max |a - b|, max |b|, and the relative L2 error ||a - b|| / ||b|| (computed in float64).</summary>
    public static (double MaxAbs, double RefMaxAbs, double RelL2) Compare(Tensor actual, Tensor expected)
    {
        if (!actual.shape.SequenceEqual(expected.shape))
            throw new InvalidOperationException($"shape [{string.Join(",", actual.shape)}] vs reference [{string.Join(",", expected.shape)}]");
        using var scope = NewDisposeScope();
        var a = actual.to(ScalarType.Float64);
        var b = expected.to(ScalarType.Float64);
        var d = a - b;
        double maxAbs = d.abs().max().item<double>();
        double refMax = b.abs().max().item<double>();
        double refNorm = b.norm().item<double>();
        double rel = d.norm().item<double>() / Math.Max(refNorm, 1e-30);
        return (maxAbs, refMax, rel);
    }
}
