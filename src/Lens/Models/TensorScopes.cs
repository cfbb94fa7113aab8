using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>Dispose-scope helpers for forward methods that return more than one tensor.</summary>
internal static class TensorScopes
{
    /// <summary>
    /// Moves each distinct tensor (by reference) one scope out, so a block can return its hidden state and a residual
    /// tuple that share tensors without moving any of them twice.
    /// </summary>
    /// <summary>
    /// Releases <paramref name="previous"/> (an intermediate the caller no longer needs) as soon as
    /// <paramref name="next"/> has been computed from it, unless it is <paramref name="keep"/> (the caller's input) or
    /// <paramref name="next"/> itself; returns <paramref name="next"/>. Only the handle is disposed: storage shared with
    /// a view stays alive, so this never changes a result, it only lets the allocator reuse the memory sooner.
    /// </summary>
    public static Tensor Then(Tensor previous, Tensor next, Tensor keep)
    {
        if (!ReferenceEquals(previous, keep) && !ReferenceEquals(previous, next)) previous.Dispose();
        return next;
    }

    public static void MoveOut(params IEnumerable<Tensor>[] groups)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var g in groups)
            foreach (var t in g)
                if (seen.Add(t)) t.MoveToOuterDisposeScope();
    }
}
