using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Finds the repository and its reference folders (fixtures/references/&lt;name&gt;/ with reference.json and
/// tensors.safetensors, written by fixtures/make_reference.py with real diffusers) and reads their tensors; compares
/// tensors with max-abs and relative-L2 metrics.
/// </summary>
public sealed class ReferenceData : IDisposable
{
    public string Name { get; }
    public string Folder { get; }
    public JsonObject Json { get; }
    /// <summary>"sd" or "if" (reference.json "kind").</summary>
    public string Kind { get; }
    /// <summary>The model folder named by reference.json model.path (relative to the repository root), or null when absent.</summary>
    public string? ModelPath { get; }
    private SafetensorsFile? _tensors;

    private ReferenceData(string folder)
    {
        Folder = folder;
        Name = System.IO.Path.GetFileName(folder);
        Json = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(folder, "reference.json")))!.AsObject();
        Kind = Json["kind"]?.GetValue<string>() ?? "";
        var p = Json["model"]?["path"]?.GetValue<string>();
        if (p is not null)
        {
            var full = System.IO.Path.IsPathRooted(p) ? p : System.IO.Path.Combine(RepoRoot, p);
            ModelPath = Directory.Exists(full) ? full : null;
        }
    }

    private static string? _repoRoot;

    /// <summary>The folder holding DiffusionLens.sln, found by walking up from the test binaries.</summary>
    public static string RepoRoot => _repoRoot ??= FindRepoRoot();

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "DiffusionLens.sln"))) return d.FullName;
        throw new InvalidOperationException($"DiffusionLens.sln not found above {AppContext.BaseDirectory}");
    }

    public static string ReferencesDir => System.IO.Path.Combine(RepoRoot, "fixtures", "references");

    public static ReferenceData Open(string name) => new(System.IO.Path.Combine(ReferencesDir, name));

    /// <summary>Names of the reference folders whose model folder exists, optionally of one kind ("sd" / "if").</summary>
    public static IEnumerable<string> Available(string? kind = null)
    {
        if (!Directory.Exists(ReferencesDir)) yield break;
        foreach (var dir in Directory.GetDirectories(ReferencesDir).OrderBy(d => d, StringComparer.Ordinal))
        {
            if (!File.Exists(System.IO.Path.Combine(dir, "reference.json"))) continue;
            var r = new ReferenceData(dir);
            if (r.ModelPath is null) continue;
            if (kind is not null && r.Kind != kind) continue;
            yield return r.Name;
        }
    }

    public SafetensorsFile Tensors => _tensors ??= new SafetensorsFile(System.IO.Path.Combine(Folder, Json["tensors"]?.GetValue<string>() ?? "tensors.safetensors"));

    public bool Has(string key) => Tensors.Entries.ContainsKey(key);

    /// <summary>Reads one reference tensor (CPU, its stored dtype).</summary>
    public Tensor Read(string key) => Tensors.Read(key);

    /// <summary>A component folder of the model (unet, vae, text_encoder, ...).</summary>
    public string Component(string name) =>
        System.IO.Path.Combine(ModelPath ?? throw new InvalidOperationException($"{Name}: no model folder"), name);

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
