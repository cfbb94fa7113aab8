using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// Batch invariance of a lens sweep's batches (<c>--batch-invariant on</c>, the default on CUDA): every kernel call of
/// the image models' <see cref="IBatchInvariant"/> modules (Conv2d, GroupNorm, LayerNorm, Linear, attention's SDPA, IF's
/// AttentionPooling, FLUX's RMSNorm)
/// gives each layer's rows the numbers of one <em>canonical call</em>, a call of <see cref="CanonicalLayers"/> layers'
/// rows, whatever the batch (<c>--batch 1</c>, <c>--batch auto</c> on the free memory, the last, smaller batch), so a
/// layer's images do not depend on how many layers share its batch.
/// <para>Why a canonical call: cuDNN picks a convolution's algorithm by the call's shape, batch included, so a row's
/// numbers can depend on how many rows share the call; but within a call of a fixed shape they do not depend on the
/// row's slot or on the other rows (measured on an H200 for every convolution of an SD 1.5-sized UNet and VAE,
/// <c>ci/conv_canonical.py</c>). So a call of the canonical number of layers runs as it is; a call of other sizes runs
/// as it is where that gives the canonical call's numbers (checked once per shape and batch, <see cref="Run(Tensor[], Decisions, Func{Tensor[], Tensor})"/>) and
/// otherwise in canonical calls, the layers' rows in the first slots and zeros after them. A full batch of
/// <see cref="CanonicalLayers"/> layers costs nothing; <c>--batch 1</c> pays for padding the shapes that vary (11 of 48
/// convolution shapes of SD 1.5 on an H200). Each shape's canonical call is itself checked once for slot independence
/// (one layer's pseudo-random rows in every even slot); a shape whose rows depend on their slot falls back to one call
/// per layer, the layer's rows alone, at every batch.</para>
/// <para>Guided calls run in layer-major order (<see cref="ToLayerMajor"/>): each layer's rows are contiguous, as the
/// canonical slots need. The scope is per thread, so sweeps on other threads are unaffected.</para>
/// </summary>
internal static partial class BatchInvariance
{
    [ThreadStatic] private static long _layers;

    /// <summary>The layers in the batch running on this thread (0: batch invariance off; 1 or more: on).</summary>
    public static long CurrentLayers => _layers;

    /// <summary>
    /// The layers of a canonical call (LENS_BATCH_INVARIANCE_LAYERS, default 12: the 12-layer sweep and the
    /// largest batch of the bench's; a sweep's images under --batch-invariant on are those of calls of this many layers).
    /// </summary>
    public static readonly int CanonicalLayers =
        int.TryParse(Environment.GetEnvironmentVariable("LENS_BATCH_INVARIANCE_LAYERS"), out var c) && c >= 1 ? c : 12;

    /// <summary>Marks the model calls on this thread until disposal as a batch of <paramref name="layers"/> layers' rows (0: invariance off).</summary>
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
    /// [layer 0: block 0, block 1; layer 1: ...], so each layer's rows are contiguous and in the order --batch 1 gives
    /// them ([uncond, cond]). Every per-row input of the call is reordered alike; <see cref="ToBlockMajor"/> puts the
    /// output back.
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
    /// <paramref name="op"/> on <paramref name="input"/>, giving each layer's rows the canonical call's numbers inside
    /// <see cref="Layers"/> (see the class summary); one plain call outside it or for rows that are not the batch's layers'.
    /// </summary>
    public static Tensor Run(Tensor input, Decisions decisions, Func<Tensor, Tensor> op)
    {
        if (!InScope(input)) return op(input);
        // the decided plain call without allocations (the hot path of every step)
        long rows = input.shape[0];
        long unit = rows / _layers;
        var key = new ShapeKey(Mix(Seed, Fingerprint(input, rows, unit)), unit);
        if (decisions.TryGetValue(key, out var shape) && RunsPlain(shape, rows, unit)) return op(input);
        return Run(new[] { input }, decisions, a => op(a[0]), key, rows, unit);
    }

    /// <summary>Whether <paramref name="rows"/>' leading dimension is the rows of this thread's batch of layers.</summary>
    private static bool InScope(Tensor rows)
    {
        long layers = _layers;
        if (layers < 1 || rows.ndim < 2) return false;
        long n = rows.shape[0];
        return n >= layers && n % layers == 0;
    }

    /// <summary>Whether a decided shape runs as one plain call at this batch (no check, no padding).</summary>
    private static bool RunsPlain(Decision shape, long rows, long unit) =>
        shape.Canonical > 0 && ((rows == unit * CanonicalLayers && shape.Dense)
            || (shape.Batches.TryGetValue((int)_layers, out var batch) && batch.Mode == BatchDecision.Plain && batch.Probes >= Probes));

    /// <summary>
    /// <see cref="Run(Tensor, Decisions, Func{Tensor, Tensor})"/> for an op of several inputs (e.g. query, key, value):
    /// the rows are the first input's leading dimension; every input with that many leading rows is a per-row input
    /// (split and padded alike), the others (broadcast masks) are passed whole to each call.
    /// <list type="number">
    /// <item>Once per shape (rows per layer, strides, type): a canonical call holding one layer's pseudo-random rows in
    /// every even slot (other rows pseudo-random, one slot zeros) must give those rows the same numbers in every even
    /// slot; if not, the shape runs one call per layer at every batch.</item>
    /// <item>A call of <see cref="CanonicalLayers"/> layers' dense rows is the canonical call: it runs as it is.</item>
    /// <item>Other batches, once per shape and batch: the plain call against canonical calls on pseudo-random data, then
    /// on the first <see cref="Probes"/> real calls; any difference makes the shape run in canonical calls at that batch.</item>
    /// </list>
    /// Two kernels that differ only in the order of a float32 sum give the same float16 value for most elements, so
    /// each pseudo-random check compares at least <see cref="CheckedElements"/> values (several datasets for small shapes).
    /// </summary>
    public static Tensor Run(Tensor[] inputs, Decisions decisions, Func<Tensor[], Tensor> op)
    {
        if (!InScope(inputs[0])) return op(inputs);
        long rows = inputs[0].shape[0];
        long unit = rows / _layers;
        ulong fingerprint = Seed;
        foreach (var t in inputs) fingerprint = Mix(fingerprint, Fingerprint(t, rows, unit));
        return Run(inputs, decisions, op, new ShapeKey(fingerprint, unit), rows, unit);
    }

    /// <summary>The decisions and calls of <see cref="Run(Tensor[], Decisions, Func{Tensor[], Tensor})"/> for a call in scope, its key made.</summary>
    private static Tensor Run(Tensor[] inputs, Decisions decisions, Func<Tensor[], Tensor> op, ShapeKey key, long rows, long unit)
    {
        int layers = (int)_layers;
        if (!decisions.TryGetValue(key, out var shape))
            shape = decisions.GetOrAdd(key, new Decision(Describe(inputs, rows, unit), inputs.All(t => !PerRow(t, rows) || Dense(t))));
        if (shape.Canonical == 0)
        {
            shape.Canonical = SlotIndependent(inputs, rows, unit, op) ? 1 : -1;
            if (Trace && shape.Canonical < 0)
                Console.Error.WriteLine($"batch-invariant: {decisions.Owner} {shape.Shape}: the canonical call's rows depend on their slot; one call per layer");
        }
        if (shape.Canonical < 0) return Canonical(inputs, rows, unit, unit, op); // one call per layer (a layer's rows alone)
        long canonicalRows = unit * CanonicalLayers;
        if (rows == canonicalRows && shape.Dense) return op(inputs);
        var batch = shape.Batches.GetOrAdd(layers, _ => new BatchDecision());
        if (batch.Mode == 0)
        {
            bool agrees = PlainAgrees(inputs, rows, unit, op);
            batch.Mode = agrees ? BatchDecision.Plain : BatchDecision.Padded;
            if (Trace && !agrees)
                Console.Error.WriteLine($"batch-invariant: {decisions.Owner} {shape.Shape} at {layers} layer(s) runs in canonical calls, synthetic probe");
        }
        if (batch.Mode == BatchDecision.Padded) return Canonical(inputs, rows, unit, canonicalRows, op);
        var plain = op(inputs);
        if (batch.Probes >= Probes) return plain;
        // a probe: this call's data both ways (two algorithms may agree on some inputs, so several calls are checked)
        batch.Probes++;
        var canonical = Canonical(inputs, rows, unit, canonicalRows, op);
        if (plain.Equals(canonical))
        {
            canonical.Dispose();
            return plain;
        }
        batch.Mode = BatchDecision.Padded;
        if (Trace)
        {
            using var ne = plain.ne(canonical);
            Console.Error.WriteLine($"batch-invariant: {decisions.Owner} {shape.Shape} at {layers} layer(s) runs in canonical calls, probe {batch.Probes}: {ne.sum().item<long>()} of {ne.numel()} values differ");
        }
        plain.Dispose();
        return canonical;
    }

    /// <summary>Whether an input is per-row data of a call of <paramref name="rows"/> rows (split and padded), not broadcast.</summary>
    private static bool PerRow(Tensor t, long rows) => t.ndim > 0 && t.shape[0] == rows;

    /// <summary>The call's input shapes with the rows per layer in place of the rows, and each per-row input's layout (for traces).</summary>
    private static string Describe(Tensor[] inputs, long rows, long unit) => string.Join(",", inputs.Select(t =>
        PerRow(t, rows)
            ? string.Join("x", t.shape.Skip(1).Prepend(unit)) + (Dense(t) && t.ndim > 1 && !t.is_contiguous() ? " (" + string.Join("", StrideOrder(t)) + ")" : Dense(t) ? "" : " (view)")
            : string.Join("x", t.shape)));

    /// <summary>
    /// op in calls of <paramref name="callRows"/> rows: consecutive runs of the batch's rows (views where they are a
    /// whole call of dense rows), the last run padded with zeros; the calls' rows for the batch's rows, concatenated.
    /// </summary>
    private static Tensor Canonical(Tensor[] inputs, long rows, long unit, long callRows, Func<Tensor[], Tensor> op)
    {
        var dense = inputs.Select(t => !PerRow(t, rows) || Dense(t)).ToArray(); // once, not per run
        if (rows == callRows && dense.All(d => d)) return op(inputs);
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>();
        for (long start = 0; start < rows; start += callRows)
        {
            long count = Math.Min(callRows, rows - start);
            var call = inputs.Select((t, i) => !PerRow(t, rows) ? t
                : count == callRows && dense[i] ? t.narrow(0, start, count)
                : PadRows(t, start, count, callRows)).ToArray();
            var output = op(call);
            parts.Add(count == callRows ? output : output.narrow(0, 0, count));
        }
        if (parts.Count == 1) return parts[0].MoveToOuterDisposeScope();
        var result = Allocate(parts[0], rows); // the calls' layout (a concatenation could change channels-last)
        long at = 0;
        foreach (var part in parts)
        {
            result.narrow(0, at, part.shape[0]).copy_(part);
            at += part.shape[0];
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Rows [start, start + count) of t in a new tensor of <paramref name="total"/> rows (zeros after them) of t's layout.</summary>
    private static Tensor PadRows(Tensor t, long start, long count, long total)
    {
        var padded = Allocate(t, total);
        padded.narrow(0, 0, count).copy_(t.narrow(0, start, count));
        return padded;
    }

    /// <summary>Zeros of t's shape with <paramref name="rows"/> rows and t's dimension order in memory (rows outermost; dense).</summary>
    private static Tensor Allocate(Tensor t, long rows)
    {
        var order = StrideOrder(t);
        var physical = order.Select(d => d == 0 ? rows : t.shape[d]).ToArray();
        var inverse = new long[order.Length];
        for (int k = 0; k < order.Length; k++) inverse[order[k]] = k;
        return torch.zeros(physical, dtype: t.dtype, device: t.device).permute(inverse);
    }

    /// <summary>t's dimensions from the outermost in memory: the rows first, then by decreasing stride (ties in order).</summary>
    private static long[] StrideOrder(Tensor t)
    {
        var strides = t.stride();
        return Enumerable.Range(1, (int)t.ndim - 1).OrderByDescending(d => strides[d]).ThenBy(d => d).Select(d => (long)d).Prepend(0L).ToArray();
    }

    /// <summary>Whether t is dense in <see cref="StrideOrder"/> (no gaps; what <see cref="Allocate"/> makes).</summary>
    private static bool Dense(Tensor t)
    {
        var order = StrideOrder(t);
        var strides = t.stride();
        long expected = 1;
        for (int k = order.Length - 1; k >= 0; k--)
        {
            long d = order[k];
            if (t.shape[d] > 1 && strides[d] != expected) return false;
            expected *= t.shape[d];
        }
        return true;
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

}

/// <summary>A module whose kernel calls <see cref="BatchInvariance"/> keeps batch-invariant.</summary>
internal interface IBatchInvariant
{
    /// <summary>Per input shape: how the module's kernel gives each layer's rows the canonical call's numbers.</summary>
    BatchInvariance.Decisions Invariance { get; }
}
