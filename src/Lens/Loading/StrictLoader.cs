using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Loading;

/// <summary>
/// Loads a <see cref="WeightSet"/> into a module whose tree mirrors the checkpoint's keys: every module key must be in the
/// file with the same shape and every file key must be in the module, except keys the model declares ignorable
/// (as transformers' <c>_keys_to_ignore_on_load_unexpected</c>). Tensors are read straight into the parameters (or through a
/// per-thread staging buffer with the dtype conversion on the parameter's device; <see cref="WeightCopier"/>), so peak
/// memory is the model plus one tensor per loading thread.
/// </summary>
internal static class StrictLoader
{
    /// <param name="prefix">a prefix the file's keys carry before the module's keys (e.g. "text_model.")</param>
    /// <param name="ignoreUnexpected">predicate for file keys that may be left unused</param>
    /// <param name="legacyKeyFor">for a module key the file lacks, the older name the same tensor may have in the file
    /// (diffusers' own conversion of deprecated names, e.g. the VAE attention's query/key/value/proj_attn)</param>
    public static void Load(nn.Module module, WeightSet weights, string component, string prefix = "",
        Func<string, bool>? ignoreUnexpected = null, Func<string, string?>? legacyKeyFor = null)
    {
        var sd = module.state_dict();
        var fileKeys = new Dictionary<string, string>();
        var missing = new List<string>();
        var badShape = new List<string>();
        foreach (var (key, target) in sd)
        {
            var fileKey = prefix + key;
            if (!weights.Contains(fileKey) && legacyKeyFor?.Invoke(key) is string legacy && weights.Contains(prefix + legacy))
                fileKey = prefix + legacy;
            if (!weights.Contains(fileKey)) { missing.Add(fileKey); continue; }
            fileKeys[key] = fileKey;
            var e = weights.Entry(fileKey);
            if (!e.Shape.SequenceEqual(target.shape))
                badShape.Add($"{fileKey}: file [{string.Join(",", e.Shape)}] vs model [{string.Join(",", target.shape)}]");
        }
        var used = new HashSet<string>(fileKeys.Values);
        var unexpected = weights.Keys.Where(k => !used.Contains(k) && !(ignoreUnexpected?.Invoke(k) ?? false)).OrderBy(k => k).ToList();
        if (missing.Count > 0 || badShape.Count > 0 || unexpected.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} missing key(s): {Preview(missing)}");
            if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected key(s): {Preview(unexpected)}");
            if (badShape.Count > 0) parts.Add($"{badShape.Count} shape mismatch(es): {Preview(badShape)}");
            throw new LensException($"{component}: the weights in {weights.Description} do not match the model built from its config; {string.Join("; ", parts)}");
        }
        var jobs = sd.Select(kv =>
        {
            var (file, entry) = weights.Locate(fileKeys[kv.Key]);
            return new WeightCopier.Job(kv.Value, file, entry);
        }).ToList();
        WeightCopier.CopyAll(jobs);
    }

    private static string Preview(List<string> items) =>
        string.Join(", ", items.Take(6)) + (items.Count > 6 ? $", ... ({items.Count - 6} more)" : "");
}
