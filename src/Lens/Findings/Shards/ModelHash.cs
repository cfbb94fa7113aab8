using System.Security.Cryptography;
using System.Text;
using DiffusionLens.Loading;
using DiffusionLens.Pipelines;

namespace DiffusionLens.Findings;

/// <summary>
/// One hash of a model: SHA-256 over the lines "relative/path sha256\n" of its weights files, sorted by path, where each
/// file's sha256 is the one manifest.json records as <c>weights_sha256</c> (the files the pipeline loads, with the
/// variant rule of loading).
/// </summary>
internal static class ModelHash
{
    /// <summary>Combines per-file hashes (manifest.json's weights_sha256) into the model hash.</summary>
    public static string Combine(IReadOnlyDictionary<string, string> weightsSha256)
    {
        var sb = new StringBuilder();
        foreach (var (path, sha) in weightsSha256.OrderBy(kv => kv.Key, StringComparer.Ordinal)) sb.Append(path).Append(' ').Append(sha).Append('\n');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>Hashes the weights files a pipeline (or a DeepFloyd IF stage II) would load from <paramref name="modelDir"/>, without loading it.</summary>
    public static string Of(string modelDir, string? variant)
    {
        var index = ModelIndex.Load(modelDir);
        // a DeepFloyd IF stage II loads its UNet alone (its text encoder, if any, is never read)
        var components = index.ClassName == IFSuperResolutionPipeline.ClassName ? new[] { "unet" } : LensPipeline.PipelineComponents(index);
        var files = components.SelectMany(c =>
        {
            var dir = index.Require(c);
            return WeightSet.FromFolder(dir, WeightSet.ComponentVariant(dir, variant)).FilePaths;
        });
        var hashes = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in files)
        {
            using var s = File.OpenRead(f);
            hashes[Path.GetRelativePath(index.Folder, f).Replace('\\', '/')] = Convert.ToHexStringLower(SHA256.HashData(s));
        }
        return Combine(hashes);
    }
}
