using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using DiffusionLens.Loading;

namespace DiffusionLens.Testing;

/// <summary>
/// Checks that a model folder holds the weights a reference was recorded from (reference.json model.weights_sha256,
/// written by fixtures/make_reference.py / fixtures/weight_hashes.py: {component: {path relative to the model folder:
/// sha256 hex}}) before any comparison: the files the C# loader reads for each component (with the reference's variant,
/// per component as diffusers) must be exactly the listed ones, and each must have the listed hash. Otherwise it throws,
/// naming the file: "reference recorded from different weights: unet/diffusion_pytorch_model.safetensors ...".
/// </summary>
public static class ReferenceWeights
{
    /// <summary>The pipeline components whose weights a reference of this kind ("sd" / "if") loads.</summary>
    public static string[] Components(string kind) => kind switch
    {
        "if" => new[] { "text_encoder", "unet" },
        "if2" or "if2-seeds" or "if2-schedulers" => new[] { "unet" }, // IF stage II: no text encoder of its own
        "sdxl" => new[] { "text_encoder", "text_encoder_2", "unet", "vae" },
        "flux" => new[] { "text_encoder", "text_encoder_2", "transformer", "vae" },
        _ => new[] { "text_encoder", "unet", "vae" },
    };

    private static readonly ConcurrentDictionary<string, string> HashCache = new();

    /// <summary>Throws, naming the file, unless <paramref name="modelDir"/> holds exactly the recorded weight files.</summary>
    /// <param name="referenceName">the reference's name, for messages</param>
    /// <param name="kind">"sd", "sdxl", "flux", "if" or "if2"</param>
    /// <param name="modelDir">the model folder the reference is compared against</param>
    /// <param name="recorded">reference.json's model.weights_sha256 (null: none recorded, which fails)</param>
    /// <param name="variant">the weights variant the reference was recorded with, or null</param>
    public static void Verify(string referenceName, string kind, string modelDir, JsonObject? recorded, string? variant)
    {
        if (recorded is null)
            throw new InvalidOperationException($"{referenceName}: reference.json records no model.weights_sha256, so the weights it was recorded from are unknown (re-record it with fixtures/make_reference.py, or add them with fixtures/weight_hashes.py)");
        var expectedComponents = Components(kind);
        var listedComponents = recorded.Select(kv => kv.Key).Order(StringComparer.Ordinal).ToArray();
        if (!listedComponents.SequenceEqual(expectedComponents.Order(StringComparer.Ordinal)))
            throw new InvalidOperationException($"{referenceName}: reference.json model.weights_sha256 lists the components [{string.Join(", ", listedComponents)}], a {kind} pipeline loads [{string.Join(", ", expectedComponents)}]");
        foreach (var component in expectedComponents)
        {
            var dir = Path.Combine(modelDir, component);
            var listed = recorded[component]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<string>(), StringComparer.Ordinal);
            var loaded = WeightSet.FromFolder(dir, WeightSet.ComponentVariant(dir, variant)).FilePaths
                .Select(f => Path.GetRelativePath(modelDir, f).Replace('\\', '/')).ToList();
            var notListed = loaded.Where(f => !listed.ContainsKey(f)).ToList();
            var notLoaded = listed.Keys.Where(f => !loaded.Contains(f)).ToList();
            if (notListed.Count > 0 || notLoaded.Count > 0)
                throw new InvalidOperationException($"{referenceName}: reference recorded from different weights: {component} loads [{string.Join(", ", loaded)}] from {modelDir}, reference.json lists [{string.Join(", ", listed.Keys)}]");
            foreach (var rel in loaded)
            {
                var actual = Sha256(Path.Combine(modelDir, rel));
                if (!string.Equals(actual, listed[rel], StringComparison.OrdinalIgnoreCase))
                    throw new InvalidOperationException($"{referenceName}: reference recorded from different weights: {rel} (sha256 {actual} in {modelDir}, {listed[rel]} in reference.json)");
            }
        }
    }

    /// <summary>sha256 hex of a file, computed once per path, size and modification time.</summary>
    public static string Sha256(string path)
    {
        var info = new FileInfo(path);
        var key = $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        return HashCache.GetOrAdd(key, _ =>
        {
            using var s = File.OpenRead(path);
            return Convert.ToHexStringLower(SHA256.HashData(s));
        });
    }
}
