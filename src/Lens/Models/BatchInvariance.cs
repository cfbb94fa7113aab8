namespace DiffusionLens.Models;

/// <summary>
/// Batch invariance of a lens sweep's batches (<c>--batch-invariant</c>, on by default): while a batch of k layers runs
/// inside <see cref="Layers"/>, every <see cref="Conv2d"/> and <see cref="GroupNorm"/> whose batched call would give a
/// row other numbers than that layer's own call runs per layer's rows, so images do not depend on how many layers
/// share a batch (for <c>--batch auto</c>: on the free memory). Which calls those are depends on the kernels' choices
/// per shape, so each module finds out once per input shape by computing both ways (<see cref="Run"/>). Measured:
/// on an H200 (float16) 34 of the SD 1.5 UNet's 98 convolution shapes at 24 rows, 1 of the VAE decoder's 36
/// (<c>ci/batch_invariance.py</c>); on the CPU (float32) libtorch's GroupNorm at some shapes. Linear, attention and
/// LayerNorm were batch-invariant on both. The scope is per thread, so sweeps on other threads are unaffected.
/// </summary>
internal static class BatchInvariance
{
    [ThreadStatic] private static long _layers;

    /// <summary>The layers in the batch running on this thread (0 or 1: no per-layer splitting).</summary>
    public static long CurrentLayers => _layers;

    /// <summary>Marks the model calls on this thread until disposal as a batch of <paramref name="layers"/> layers' rows.</summary>
    public static IDisposable Layers(long layers)
    {
        var previous = _layers;
        _layers = layers;
        return new Restore(previous);
    }

    private sealed class Restore(long previous) : IDisposable
    {
        public void Dispose() => _layers = previous;
    }

    /// <summary>
    /// <paramref name="op"/> on <paramref name="input"/> as <c>--batch 1</c> computes it: outside a batch of several
    /// layers, or for rows that are not the batch's layers' rows, one call; otherwise the first call at a shape runs
    /// both batched and per layer's rows and remembers in <paramref name="decisions"/> whether they differ; from then on
    /// the shape runs batched (equal) or per layer's rows (different).
    /// </summary>
    public static TorchSharp.torch.Tensor Run(TorchSharp.torch.Tensor input, Decisions decisions, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor> op)
    {
        long layers = _layers;
        if (layers <= 1 || input.ndim < 2 || input.shape[0] < layers || input.shape[0] % layers != 0) return op(input);
        long unit = input.shape[0] / layers;
        var key = new ShapeKey(string.Join("x", input.shape), unit);
        if (decisions.TryGetValue(key, out bool split)) return split ? PerLayer(input, unit, op) : op(input);
        var whole = op(input);
        var perLayer = PerLayer(input, unit, op);
        split = !whole.Equals(perLayer);
        decisions[key] = split;
        if (split) { whole.Dispose(); return perLayer; }
        perLayer.Dispose();
        return whole;
    }

    private static TorchSharp.torch.Tensor PerLayer(TorchSharp.torch.Tensor x, long unit, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor> op)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var parts = new TorchSharp.torch.Tensor[x.shape[0] / unit];
        for (int i = 0; i < parts.Length; i++) parts[i] = op(x.narrow(0, i * unit, unit));
        return TorchSharp.torch.cat(parts, 0).MoveToOuterDisposeScope();
    }

    /// <summary>An input shape ("24x320x64x64") and the rows per layer it splits into.</summary>
    public readonly record struct ShapeKey(string Shape, long Unit);

    /// <summary>One module's decisions: per input shape, whether it runs per layer's rows.</summary>
    public sealed class Decisions : System.Collections.Concurrent.ConcurrentDictionary<ShapeKey, bool>
    {
        /// <summary>The shapes that run per layer's rows.</summary>
        public int Split => this.Count(kv => kv.Value);
    }

    /// <summary>How many of the modules' (convolution and group norm) input shapes ran per layer's rows, of how many checked.</summary>
    public static (int Split, int Checked) Count(IEnumerable<TorchSharp.torch.nn.Module> roots)
    {
        int split = 0, checkedShapes = 0;
        foreach (var root in roots)
            foreach (var (_, m) in root.named_modules())
                if (((m as Conv2d)?.Invariance ?? (m as GroupNorm)?.Invariance) is Decisions d)
                {
                    split += d.Split;
                    checkedShapes += d.Count;
                }
        return (split, checkedShapes);
    }
}
