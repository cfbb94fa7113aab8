using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// Batch invariance of a lens sweep's batches (<c>--batch-invariant on</c>): while a batch of k layers runs inside
/// <see cref="Layers"/>, every kernel call of the image models' <see cref="IBatchInvariant"/> modules (Conv2d,
/// GroupNorm, LayerNorm, Linear, attention's SDPA) whose batched call would give a row other numbers than that layer's
/// own call runs in smaller calls (of as many layers' rows as still give each layer its own call's numbers; one layer
/// at worst), so images do not depend on how many layers share a batch (for <c>--batch auto</c>: on the free memory). Which calls those are depends on the kernels' choices per shape, so each module finds out once
/// per input shape by computing both ways (<see cref="Run"/>), with each layer's rows in the positions --batch 1 gives
/// them (guided calls run in layer-major order, <see cref="ToLayerMajor"/>: cuDNN's numbers for a row can depend on its
/// position in the batch). Measured on an H200
/// (SD 1.5-sized UNet and VAE, float16, 12 layers; before calls of several layers were tried): 35 of 134 convolution
/// shapes run per layer, no GroupNorm,
/// LayerNorm, Linear or attention shape; the sweep's 12 images then equal --batch 1's bit for bit. On the CPU (float32)
/// libtorch's GroupNorm and small GEMMs (the time embedding's) vary at some shapes. The scope is per thread, so sweeps
/// on other threads are unaffected.
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
    /// A guided call's rows in layer-major order, for a batch of several layers inside <see cref="Layers"/> (identity
    /// otherwise): [block 0: layer 0..k-1, block 1: layer 0..k-1] (diffusers' [uncond rows, cond rows]) becomes
    /// [layer 0: block 0, block 1; layer 1: ...], so each layer's rows are contiguous and in the positions --batch 1 gives
    /// them ([uncond, cond]): cuDNN's numbers for a row can depend on its position in the batch. Every per-row input of
    /// the call is reordered alike; <see cref="ToBlockMajor"/> puts the output back.
    /// </summary>
    public static Tensor ToLayerMajor(Tensor x, long blocks) => Reorder(x, blocks, toLayerMajor: true);

    /// <summary>The inverse of <see cref="ToLayerMajor"/>.</summary>
    public static Tensor ToBlockMajor(Tensor x, long blocks) => Reorder(x, blocks, toLayerMajor: false);

    private static Tensor Reorder(Tensor x, long blocks, bool toLayerMajor)
    {
        long layers = _layers;
        if (layers <= 1 || blocks <= 1 || x.ndim < 1 || x.shape[0] % (layers * blocks) != 0) return x;
        long run = x.shape[0] / (layers * blocks);
        var outer = toLayerMajor ? new[] { blocks, layers } : new[] { layers, blocks };
        var shape = outer.Concat(new[] { run }).Concat(x.shape.Skip(1)).ToArray();
        return x.reshape(shape).transpose(0, 1).reshape(x.shape);
    }

    /// <summary>
    /// <paramref name="op"/> on <paramref name="input"/> as <c>--batch 1</c> computes it: outside a batch of several
    /// layers, or for rows that are not the batch's layers' rows, one call; otherwise a shape is first checked on
    /// pseudo-random inputs for the largest number of layers per call (all of them: one call) whose results equal one
    /// call per layer, and its first real calls (<see cref="Probes"/>) are checked the same way (a difference lowers the
    /// number); <paramref name="decisions"/> remembers it per shape. cuDNN keeps one algorithm over ranges of batch
    /// sizes, so a shape that differs at 24 rows may agree at 4 or 6: fewer calls than one per layer.
    /// </summary>
    public static Tensor Run(Tensor input, Decisions decisions, Func<Tensor, Tensor> op) =>
        SplitsIntoLayers(input) ? Run(new[] { input }, decisions, a => op(a[0])) : op(input); // no allocation when off

    /// <summary>Whether <paramref name="rows"/>' leading dimension is the rows of this thread's batch of several layers.</summary>
    private static bool SplitsIntoLayers(Tensor rows)
    {
        long layers = _layers;
        return layers > 1 && rows.ndim >= 2 && rows.shape[0] >= layers && rows.shape[0] % layers == 0;
    }

    /// <summary>
    /// <see cref="Run(Tensor, Decisions, Func{Tensor, Tensor})"/> for an op of several inputs (e.g. query, key, value):
    /// the rows are the first input's leading dimension; every input with that many leading rows is split alike, the
    /// others (broadcast masks) are passed whole to each per-layer call.
    /// </summary>
    public static Tensor Run(Tensor[] inputs, Decisions decisions, Func<Tensor[], Tensor> op)
    {
        if (!SplitsIntoLayers(inputs[0])) return op(inputs);
        long rows = inputs[0].shape[0];
        int layers = (int)_layers;
        long unit = rows / layers;
        var key = new ShapeKey(string.Join(",", inputs.Select(t => string.Join("x", t.shape))), unit);
        var state = decisions.GetOrAdd(key, _ => new Decision(layers));
        if (state.LayersPerCall == 0)
        {
            // the first check: pseudo-random data of the call's shapes; the largest group of layers per call that gives
            // each layer its own call's numbers (all of them: one call)
            using var scope = NewDisposeScope();
            var synthetic = Synthetic(inputs, rows);
            var reference = Grouped(synthetic, rows, unit, op);
            state.LayersPerCall = LargestAgreeing([synthetic], [reference], layers + 1, layers, rows, unit, op);
            if (Trace && state.LayersPerCall < layers)
                Console.Error.WriteLine($"batch-invariant: {decisions.Owner} {key.Shape} runs {Describe(state.LayersPerCall, unit)}, synthetic probe");
        }
        int g = state.LayersPerCall;
        if (g == 1 || state.Probes >= Probes) return Grouped(inputs, rows, unit * g, op);
        // a probe: this call's data both ways (two algorithms may agree on some inputs, so several calls are checked)
        state.Probes++;
        var perLayer = Grouped(inputs, rows, unit, op);
        var grouped = Grouped(inputs, rows, unit * g, op);
        if (grouped.Equals(perLayer))
        {
            perLayer.Dispose();
            return grouped;
        }
        using (var scope = NewDisposeScope())
        {
            var synthetic = Synthetic(inputs, rows);
            state.LayersPerCall = LargestAgreeing([inputs, synthetic], [perLayer, Grouped(synthetic, rows, unit, op)], g, layers, rows, unit, op);
        }
        if (Trace)
        {
            using var ne = grouped.ne(perLayer);
            Console.Error.WriteLine($"batch-invariant: {decisions.Owner} {key.Shape} runs {Describe(state.LayersPerCall, unit)}, probe {state.Probes}: {ne.sum().item<long>()} of {ne.numel()} values differ at {g} layer(s) per call");
            TraceAgainstLayerCopies($"{decisions.Owner} {key.Shape}, per layer on views of the batch", perLayer, rows,
                (i, u) => op(inputs.Select(t => RowsCopy(t, i, u, rows)).ToArray()));
        }
        grouped.Dispose();
        return perLayer;
    }

    private static string Describe(int layersPerCall, long unit) =>
        layersPerCall == 1 ? $"per layer ({unit} rows)" : $"{layersPerCall} layers per call ({layersPerCall * unit} rows)";

    /// <summary>
    /// The largest number of layers per call below <paramref name="below"/> that divides the batch's layers and gives, on
    /// every dataset, what one call per layer gives (<paramref name="references"/>); 1 when none larger does.
    /// </summary>
    private static int LargestAgreeing(Tensor[][] datasets, Tensor[] references, int below, int layers, long rows, long unit, Func<Tensor[], Tensor> op)
    {
        for (int g = Math.Min(below - 1, layers); g > 1; g--)
        {
            if (layers % g != 0) continue;
            bool agrees = true;
            for (int d = 0; d < datasets.Length && agrees; d++)
            {
                using var result = Grouped(datasets[d], rows, unit * g, op);
                agrees = result.Equals(references[d]);
            }
            if (agrees) return g;
        }
        return 1;
    }

    /// <summary>A copy of rows [start, start + count) of t when t has <paramref name="rows"/> rows; t itself otherwise (shared by every row).</summary>
    internal static Tensor RowsCopy(Tensor t, long start, long count, long rows) =>
        t.ndim > 0 && t.shape[0] == rows ? t.narrow(0, start, count).clone() : t;

    /// <summary>
    /// Trace (<see cref="Trace"/>) inside a batch of several layers: whether <paramref name="whole"/>, a result for the
    /// batch's <paramref name="rows"/> rows, equals <paramref name="part"/>(start, count) on each layer's rows alone, copied
    /// out of the batch as --batch 1 has them; a difference is printed on stderr.
    /// </summary>
    internal static void TraceAgainstLayerCopies(string what, Tensor whole, long rows, Func<long, long, Tensor> part)
    {
        long layers = _layers;
        if (layers <= 1 || rows % layers != 0) return;
        using var scope = NewDisposeScope();
        using var single = Layers(0);
        long unit = rows / layers;
        var parts = new Tensor[layers];
        for (long i = 0; i < layers; i++) parts[i] = part(i * unit, unit);
        using var copies = torch.cat(parts, 0);
        if (copies.Equals(whole)) return;
        using var ne = copies.ne(whole);
        Console.Error.WriteLine($"batch-invariant: {what}: {ne.sum().item<long>()} of {ne.numel()} values differ from each layer's rows alone");
    }

    /// <summary>LENS_BATCH_INVARIANCE_TRACE=1: each shape that runs per layer, and checks of kernels that should not need to, on stderr.</summary>
    internal static readonly bool Trace = Environment.GetEnvironmentVariable("LENS_BATCH_INVARIANCE_TRACE") == "1";

    /// <summary>
    /// Calls per shape checked both ways (LENS_BATCH_INVARIANCE_PROBES, default 4). On the SD 1.5-sized UNet every
    /// difference showed at the first call, but on the tiny test model's small tensors one check missed a convolution
    /// whose two algorithms agree on most inputs (images 1 level apart; 4 checks: identical).
    /// </summary>
    private static readonly int Probes = int.TryParse(Environment.GetEnvironmentVariable("LENS_BATCH_INVARIANCE_PROBES"), out var p) && p >= 1 ? p : 4;

    /// <summary>
    /// What a module knows of one input shape in a batch of <see cref="Layers"/> layers: how many layers' rows one call
    /// takes (0: not checked yet; the batch's layers: one call), and how often it was checked on real data.
    /// </summary>
    public sealed class Decision(int layers)
    {
        public int Layers { get; } = layers;
        public volatile int LayersPerCall;
        public int Probes;
        /// <summary>Whether the shape runs in more than one call.</summary>
        public bool Split => LayersPerCall > 0 && LayersPerCall < Layers;
    }

    /// <summary>
    /// Pseudo-random inputs of the call's shapes, types and layouts for a shape's checks: the call's own data can hide a
    /// difference (a zero warm-up sample, or values two algorithms happen to round alike: on an H200 a tiny UNet's
    /// convolution agreed on 4 calls of real data and differed on the 5th), dense noise-like values do not. The values
    /// come from integer arithmetic on the device (no random generator is drawn from, so no image changes); inputs that
    /// are not per-row floating-point data (masks, indices) are passed as they are.
    /// </summary>
    private static Tensor[] Synthetic(Tensor[] inputs, long rows) =>
        inputs.Select((t, i) => t.ndim > 0 && t.shape[0] == rows && t.is_floating_point() ? Synthetic(t, i) : t).ToArray();

    /// <summary>A tensor like <paramref name="like"/> holding values in [-1, 1) of a quadratic-residue pattern (period 1000003, a prime).</summary>
    private static Tensor Synthetic(Tensor like, int salt)
    {
        const long period = 1000003;
        using var scope = NewDisposeScope();
        long n = like.numel();
        var i = torch.arange(Math.Min(n, period), dtype: ScalarType.Int64, device: like.device);
        var v = ((i * i).remainder(period) * 7919 + i * (104729 + salt)).remainder(period).to(ScalarType.Float32) * (2.0 / period) - 1.0;
        v = v.to(like.dtype);
        if (n > period) v = v.repeat((n + period - 1) / period).narrow(0, 0, n);
        return torch.empty_like(like).copy_(v.reshape(like.shape)).MoveToOuterDisposeScope(); // like's layout (channels-last stays so)
    }

    /// <summary>op on consecutive runs of <paramref name="rowsPerCall"/> rows (views of the batch), concatenated; one call for all rows.</summary>
    private static Tensor Grouped(Tensor[] inputs, long rows, long rowsPerCall, Func<Tensor[], Tensor> op)
    {
        if (rowsPerCall >= rows) return op(inputs);
        using var scope = NewDisposeScope();
        var parts = new Tensor[rows / rowsPerCall];
        for (int i = 0; i < parts.Length; i++)
            parts[i] = op(inputs.Select(t => t.ndim > 0 && t.shape[0] == rows ? t.narrow(0, i * rowsPerCall, rowsPerCall) : t).ToArray());
        return torch.cat(parts, 0).MoveToOuterDisposeScope();
    }

    /// <summary>An input shape ("24x320x64x64", inputs separated by commas) and the rows per layer it splits into.</summary>
    public readonly record struct ShapeKey(string Shape, long Unit);

    /// <summary>One module's decisions: per input shape, whether it runs per layer's rows.</summary>
    public sealed class Decisions(string owner) : System.Collections.Concurrent.ConcurrentDictionary<ShapeKey, Decision>
    {
        /// <summary>The kind of module ("Conv2d", "Linear", ...), for counts and traces.</summary>
        public string Owner => owner;
        /// <summary>The shapes that run in more than one call.</summary>
        public int Split => this.Count(kv => kv.Value.Split);
    }

    /// <summary>
    /// Per module kind: how many input shapes ran in more than one call, how many were checked, and how many calls the
    /// split shapes make for one batched call in all (a shape at k layers per call of L: L / k).
    /// </summary>
    public static SortedDictionary<string, (int Split, int Checked, int Calls)> Count(IEnumerable<nn.Module> roots)
    {
        var counts = new SortedDictionary<string, (int Split, int Checked, int Calls)>(StringComparer.Ordinal);
        foreach (var root in roots)
            foreach (var (_, m) in root.named_modules())
                if (m is IBatchInvariant b && b.Invariance.Count > 0)
                {
                    var (split, checkedShapes, calls) = counts.GetValueOrDefault(b.Invariance.Owner);
                    counts[b.Invariance.Owner] = (split + b.Invariance.Split, checkedShapes + b.Invariance.Count,
                        calls + b.Invariance.Values.Where(d => d.Split).Sum(d => d.Layers / d.LayersPerCall));
                }
        return counts;
    }
}

/// <summary>A module whose kernel calls <see cref="BatchInvariance"/> keeps batch-invariant.</summary>
internal interface IBatchInvariant
{
    /// <summary>Per input shape: whether the module's kernel runs per layer's rows.</summary>
    BatchInvariance.Decisions Invariance { get; }
}
