namespace DiffusionLens.Findings;

/// <summary>
/// The paper's hidden-state index and this repository's lens layer. The paper's code renders
/// <c>enumerate(output.hidden_states)</c> of transformers, where index 0 is the embedding output and index i &gt;= 1 the
/// output of encoder layer i - 1; the lens layer L here is the output of encoder layer L (0-based, embeddings not
/// rendered). So hidden-state index i is lens layer i - 1 for SD's CLIP and IF's T5 alike (SD 3,7,...,23 are layers
/// 2,6,...,22; DeepFloyd 4,8,...,24 are layers 3,7,...,23), and index 0 (the embeddings) has no lens layer.
/// </summary>
internal static class HiddenStateMapping
{
    public const string Description =
        "hidden-state index i (transformers' hidden_states, 0 = embeddings) = lens layer i - 1 (output of encoder layer i - 1); index 0 has no lens layer";

    /// <summary>The lens layer of a hidden-state index, or null for index 0 (the embeddings).</summary>
    public static int? LensLayer(int hiddenStateIndex)
    {
        if (hiddenStateIndex < 0) throw new ArgumentOutOfRangeException(nameof(hiddenStateIndex));
        return hiddenStateIndex == 0 ? null : hiddenStateIndex - 1;
    }

    public static int HiddenStateIndex(int lensLayer) => lensLayer + 1;
}
