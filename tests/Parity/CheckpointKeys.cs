namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The key differences between a transformers/diffusers state dict and the C# module that the loader accepts by design
/// (and only those), applied to the expected keys before comparing them with the C# module's:
/// <list type="bullet">
/// <item>CLIP text encoder: the "text_model." prefix (transformers 4 checkpoints carry it, transformers 5's
/// CLIPTextModel state_dict may not; <c>ClipTextModel.LoadWeights</c> accepts both), and the legacy
/// "embeddings.position_ids" buffer (ignored when a file has it).</item>
/// <item>T5 encoder: the tied input embedding appears as both "shared.weight" and "encoder.embed_tokens.weight"; the
/// C# module holds one of them (<c>T5EncoderModel.EmbeddingKeyFor</c>) and the loader ignores the other.</item>
/// </list>
/// </summary>
public static class CheckpointKeys
{
    public static Dictionary<string, long[]> Normalise(Dictionary<string, long[]> expected, IReadOnlyDictionary<string, long[]> actual, string component)
    {
        if (component != "text_encoder") return expected;
        var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var (key, shape) in expected)
        {
            var k = key.StartsWith("text_model.", StringComparison.Ordinal) ? key["text_model.".Length..] : key;
            if (k.EndsWith("embeddings.position_ids", StringComparison.Ordinal) && !actual.ContainsKey(k)) continue;
            result[k] = shape;
        }
        string[] tied = { "shared.weight", "encoder.embed_tokens.weight" };
        if (tied.All(result.ContainsKey) && result[tied[0]].SequenceEqual(result[tied[1]]))
            foreach (var k in tied)
                if (!actual.ContainsKey(k) && tied.Any(actual.ContainsKey)) result.Remove(k);
        return result;
    }
}
