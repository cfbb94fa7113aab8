using static TorchSharp.torch;

namespace DiffusionLens.Testing;

/// <summary>
/// Comparisons per row (token) or per channel: a relative L2 over a whole tensor can hide an error in one token or one
/// channel, so the worst row / channel is what a test checks.
/// </summary>
public static class RowCompare
{
    /// <summary>The worst relative L2 and max-abs over slices along <paramref name="dim"/> (e.g. dim 1 of [B, T, D]: per token).</summary>
    public static (double WorstRel, long WorstIndex, double MaxAbs, double RefMax) Worst(Tensor actual, Tensor expected, int dim)
    {
        if (!actual.shape.SequenceEqual(expected.shape))
            throw new InvalidOperationException($"shape [{string.Join(",", actual.shape)}] vs reference [{string.Join(",", expected.shape)}]");
        using var scope = NewDisposeScope();
        var a = actual.to(ScalarType.Float64).transpose(0, dim).flatten(1);
        var b = expected.to(ScalarType.Float64).transpose(0, dim).flatten(1);
        var d = a - b;
        var rel = d.norm(1) / b.norm(1).clamp_min(1e-30);
        long idx = rel.argmax().item<long>();
        return (rel[idx].item<double>(), idx, d.abs().max().item<double>(), b.abs().max().item<double>());
    }
}
