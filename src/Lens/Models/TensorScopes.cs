using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>Dispose-scope helpers for forward methods that return more than one tensor.</summary>
internal static class TensorScopes
{
    /// <summary>
    /// Moves each distinct tensor (by reference) one scope out, so a block can return its hidden state and a residual
    /// tuple that share tensors without moving any of them twice.
    /// </summary>
    public static void MoveOut(params IEnumerable<Tensor>[] groups)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var g in groups)
            foreach (var t in g)
                if (seen.Add(t)) t.MoveToOuterDisposeScope();
    }
}
