using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>The checks behind <see cref="BatchInvariance"/>'s decisions, on pseudo-random data of a call's shapes and layout.</summary>
internal static partial class BatchInvariance
{
    /// <summary>
    /// Values a pseudo-random check compares at the least (LENS_BATCH_INVARIANCE_CHECKED_ELEMENTS; default 2^22 for
    /// float16/bfloat16, whose rounding hides most float32 differences, one dataset for float32).
    /// </summary>
    private static readonly long? CheckedElements =
        long.TryParse(Environment.GetEnvironmentVariable("LENS_BATCH_INVARIANCE_CHECKED_ELEMENTS"), out var e) && e >= 1 ? e : null;

    /// <summary>Pseudo-random datasets for a check of calls of <paramref name="rows"/> rows like <paramref name="like"/>: at least <see cref="CheckedElements"/> values in all, at most 64 datasets.</summary>
    private static int Datasets(Tensor like, long rows)
    {
        long wanted = CheckedElements ?? (like.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? 1L << 22 : 1);
        long n = Math.Max(1, like.numel() / Math.Max(1, like.shape[0]) * rows);
        return (int)Math.Clamp((wanted + n - 1) / n, 1, 64);
    }

    /// <summary>
    /// The canonical call's slot independence on pseudo-random data, one call per dataset: one layer's rows in every even
    /// slot, other pseudo-random rows in the odd slots (zeros in the second), must come out the same in every even slot.
    /// </summary>
    private static bool SlotIndependent(Tensor[] inputs, long rows, long unit, Func<Tensor[], Tensor> op)
    {
        int layers = CanonicalLayers;
        if (layers < 3) return true; // no second even slot
        long canonicalRows = unit * layers;
        int evens = (layers + 1) / 2;
        for (int d = 0, n = Datasets(inputs[0], unit * (evens - 1)); d < n; d++)
        {
            using var scope = NewDisposeScope();
            var call = Synthetic(inputs, rows, canonicalRows, 2 * d + 1);
            for (int i = 0; i < inputs.Length; i++)
            {
                if (!PerRow(inputs[i], rows)) continue;
                var layer0 = call[i].narrow(0, 0, unit);
                for (int k = 2; k < layers; k += 2) call[i].narrow(0, k * unit, unit).copy_(layer0);
                call[i].narrow(0, unit, unit).zero_();
            }
            var output = op(call);
            var first = output.narrow(0, 0, unit);
            for (int k = 2; k < layers; k += 2)
                if (!output.narrow(0, k * unit, unit).Equals(first)) return false;
        }
        return true;
    }

    /// <summary>
    /// Whether plain calls of <paramref name="rows"/> rows give the canonical numbers on pseudo-random data. Below the
    /// canonical batch: one canonical call of pseudo-random rows against plain calls on copies of its runs of
    /// <paramref name="rows"/> rows; above it: plain calls against canonical calls (padded) of the same rows.
    /// </summary>
    private static bool PlainAgrees(Tensor[] inputs, long rows, long unit, Func<Tensor[], Tensor> op)
    {
        long canonicalRows = unit * CanonicalLayers;
        long runs = canonicalRows / rows;
        for (int d = 0, n = Datasets(inputs[0], runs > 0 ? runs * rows : rows); d < n; d++)
        {
            using var scope = NewDisposeScope();
            if (runs == 0)
            {
                var synthetic = Synthetic(inputs, rows, rows, 2 * d);
                if (!op(synthetic).Equals(Canonical(synthetic, rows, unit, canonicalRows, op))) return false;
                continue;
            }
            var call = Synthetic(inputs, rows, canonicalRows, 2 * d);
            var canonical = op(call);
            for (long r = 0; r < runs; r++)
            {
                using var inner = NewDisposeScope();
                var plain = op(call.Select(t => PerRow(t, canonicalRows) ? t.narrow(0, r * rows, rows).clone() : t).ToArray());
                if (!plain.Equals(canonical.narrow(0, r * rows, rows))) return false;
            }
        }
        return true;
    }

    /// <summary>
    /// Pseudo-random inputs of the call's shapes, types and layouts for a shape's checks: the call's own data can hide a
    /// difference (a zero warm-up sample, or values two algorithms happen to round alike: on an H200 a tiny UNet's
    /// convolution agreed on 4 calls of real data and differed on the 5th), dense noise-like values do not. The values
    /// come from integer arithmetic on the device (no random generator is drawn from, so no image changes); inputs that
    /// are not per-row floating-point data (masks, indices) are passed as they are.
    /// </summary>
    private static Tensor[] Synthetic(Tensor[] inputs, long rows, long count, int salt) =>
        inputs.Select((t, i) => PerRow(t, rows) && t.is_floating_point() ? Synthetic(t, count, salt * 31 + i)
            : PerRow(t, rows) ? PadRows(t, 0, Math.Min(count, rows), count) : t).ToArray();

    /// <summary>
    /// A tensor like <paramref name="like"/> with <paramref name="rows"/> rows (its layout: channels-last stays so)
    /// holding values in [-1, 1) of a quadratic-residue pattern (period 1000003, a prime).
    /// </summary>
    private static Tensor Synthetic(Tensor like, long rows, int salt)
    {
        const long period = 1000003;
        using var scope = NewDisposeScope();
        var result = Allocate(like, rows);
        long n = result.numel();
        var i = torch.arange(Math.Min(n, period), dtype: ScalarType.Int64, device: like.device);
        double scale = 1 << (salt % 4); // magnitudes 1, 2, 4, 8: larger values round apart more often
        var v = (((i * i).remainder(period) * 7919 + i * (104729 + salt)).remainder(period).to(ScalarType.Float32) * (2.0 / period) - 1.0) * scale;
        v = v.to(like.dtype);
        if (n > period) v = v.repeat((n + period - 1) / period).narrow(0, 0, n);
        return result.copy_(v.reshape(result.shape)).MoveToOuterDisposeScope();
    }
}
