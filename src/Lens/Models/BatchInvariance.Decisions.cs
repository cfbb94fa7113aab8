using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>What <see cref="BatchInvariance"/> remembers per module and input shape, and the counts the manifest reports.</summary>
internal static partial class BatchInvariance
{
    private const ulong Seed = 14695981039346656037UL;

    private static ulong Mix(ulong h, ulong v) => (h ^ v) * 1099511628211UL;

    /// <summary>A per-row input's shape (rows per layer in place of its rows), strides and type; a broadcast input's shape.</summary>
    private static ulong Fingerprint(Tensor t, long rows, long unit)
    {
        var shape = t.shape;
        bool perRow = shape.Length > 0 && shape[0] == rows;
        ulong h = Mix(Seed, (ulong)shape.Length * 2 + (perRow ? 1UL : 0UL));
        h = Mix(h, (ulong)t.dtype);
        for (int d = 0; d < shape.Length; d++) h = Mix(h, (ulong)(d == 0 && perRow ? unit : shape[d]));
        if (perRow)
        {
            var strides = t.stride();
            for (int d = 1; d < strides.Length; d++) h = Mix(h, (ulong)strides[d]);
        }
        return h;
    }

    /// <summary>
    /// What a module knows of one input shape (rows per layer, layout): whether its canonical call is slot-independent
    /// (0: not checked yet, 1: yes, -1: no, one call per layer), and per batch (layers in the call) how it runs.
    /// </summary>
    public sealed class Decision(string shape, bool dense)
    {
        /// <summary>The input shapes with the rows per layer in place of the rows, and layouts ("2x320x64x64").</summary>
        public string Shape { get; } = shape;
        /// <summary>Whether every per-row input is dense (a call of the canonical rows is then the canonical call itself).</summary>
        public bool Dense { get; } = dense;
        public volatile int Canonical;
        public System.Collections.Concurrent.ConcurrentDictionary<int, BatchDecision> Batches { get; } = new();
        /// <summary>Whether some batch ran this shape in canonical calls (padded) or per layer.</summary>
        public bool Padded => Canonical > 0 && Batches.Values.Any(b => b.Mode == BatchDecision.Padded);
        public bool PerLayer => Canonical < 0;
    }

    /// <summary>How a shape runs at one batch: plain (its own call gives the canonical numbers) or in canonical calls.</summary>
    public sealed class BatchDecision
    {
        public const int Plain = 1, Padded = 2;
        public volatile int Mode;
        public int Probes;
    }

    /// <summary>A fingerprint of the call's input shapes (the rows per layer in place of the rows), strides and types, and the rows per layer.</summary>
    public readonly record struct ShapeKey(ulong Fingerprint, long Unit);

    /// <summary>One module's decisions: per input shape, whether its canonical call is slot-independent and how each batch runs.</summary>
    public sealed class Decisions(string owner) : System.Collections.Concurrent.ConcurrentDictionary<ShapeKey, Decision>
    {
        /// <summary>The kind of module ("Conv2d", "Linear", ...), for counts and traces.</summary>
        public string Owner => owner;
        /// <summary>The shapes that ran in canonical calls (padded) at some batch.</summary>
        public int Padded => this.Count(kv => kv.Value.Padded);
        /// <summary>The shapes whose canonical call was not slot-independent (one call per layer).</summary>
        public int PerLayer => this.Count(kv => kv.Value.PerLayer);
    }

    /// <summary>
    /// Per module kind: the input shapes checked, those that ran in canonical calls (padded with zeros) at some batch,
    /// and those that ran one call per layer (their canonical call depended on the slot).
    /// </summary>
    public static SortedDictionary<string, (int Checked, int Padded, int PerLayer)> Count(IEnumerable<nn.Module> roots)
    {
        var counts = new SortedDictionary<string, (int Checked, int Padded, int PerLayer)>(StringComparer.Ordinal);
        foreach (var root in roots)
            foreach (var (_, m) in root.named_modules())
                if (m is IBatchInvariant b && b.Invariance.Count > 0)
                {
                    var (checkedShapes, padded, perLayer) = counts.GetValueOrDefault(b.Invariance.Owner);
                    counts[b.Invariance.Owner] = (checkedShapes + b.Invariance.Count, padded + b.Invariance.Padded, perLayer + b.Invariance.PerLayer);
                }
        return counts;
    }
}
