using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// A conditioning of prompt embeddings and pooled text embeddings carried as one tensor, so the sweep's batching, noise
/// plans and warm-up treat it as any pipeline's prompt embedding: [B, T, D + P] = the prompt embeddings [B, T, D]
/// followed on every token row by the pooled embeddings [B, P]. SDXL: both encoders' penultimate states concatenated,
/// text_encoder_2's pooled text embeddings; FLUX: T5's (lensed) sequence embedding, CLIP's pooled output.
/// </summary>
internal static class PooledConditioning
{
    /// <summary>[B, T, D] prompt embeddings and [B, P] pooled embeddings -&gt; [B, T, D + P].</summary>
    public static Tensor Pack(Tensor promptEmbeds, Tensor pooled)
    {
        if (promptEmbeds.ndim != 3 || pooled.ndim != 2 || pooled.shape[0] != promptEmbeds.shape[0])
            throw new ArgumentException($"prompt embeds [{string.Join(",", promptEmbeds.shape)}] and pooled [{string.Join(",", pooled.shape)}] do not pair");
        using var scope = NewDisposeScope();
        var rows = pooled.to(promptEmbeds.dtype).unsqueeze(1).expand(-1, promptEmbeds.shape[1], -1);
        return torch.cat(new[] { promptEmbeds, rows }, -1).MoveToOuterDisposeScope();
    }

    /// <summary>[B, T, D + P] -&gt; the prompt embeddings [B, T, D] and the pooled embeddings [B, P] (views).</summary>
    public static (Tensor PromptEmbeds, Tensor Pooled) Unpack(Tensor packed, long promptDim)
    {
        if (packed.ndim != 3 || packed.shape[2] <= promptDim)
            throw new ArgumentException($"packed conditioning [{string.Join(",", packed.shape)}] is not wider than the prompt embeddings ({promptDim})");
        var prompt = packed.narrow(2, 0, promptDim);
        var pooled = packed.select(1, 0).narrow(1, promptDim, packed.shape[2] - promptDim);
        return (prompt, pooled);
    }
}
