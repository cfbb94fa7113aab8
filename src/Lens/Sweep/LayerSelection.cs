using System.Globalization;

namespace DiffusionLens.Sweep;

/// <summary>
/// Which encoder layers a sweep renders: "all", a list "0,3,5", or a Python-style range "start:stop[:step]"
/// (stop exclusive; "0:12:2" = 0,2,...,10; an empty start/stop means the first/last index), in either
/// <see cref="LayerNumbering"/>: lens layers 0..N-1, or hidden states 0..N ("all" = 0..N).
/// </summary>
internal static class LayerSelection
{
    public static int[] Parse(string spec, int numLayers, string numbering = LayerNumbering.Lens)
    {
        if (numLayers <= 0) throw new ArgumentOutOfRangeException(nameof(numLayers));
        int count = LayerNumbering.Count(numbering, numLayers);
        var bad = (string why) => Bad(spec, numLayers, numbering, why);
        string what = numbering == LayerNumbering.Lens ? "layer" : "hidden state";
        spec = spec.Trim();
        int[] layers;
        if (spec is "all" or "") layers = Enumerable.Range(0, count).ToArray();
        else if (spec.Contains(':'))
        {
            var parts = spec.Split(':');
            if (parts.Length > 3) throw bad("a range is start:stop or start:stop:step");
            int start = parts[0].Length == 0 ? 0 : Int(parts[0], bad, what);
            int stop = parts[1].Length == 0 ? count : Int(parts[1], bad, what);
            int step = parts.Length == 3 && parts[2].Length > 0 ? Int(parts[2], bad, what) : 1;
            if (step <= 0) throw bad("the step must be positive");
            if (start < 0 || start >= count) throw bad($"start {start} is out of range");
            if (stop > count || stop <= start) throw bad($"stop {stop} must be in {start + 1}..{count}");
            layers = Enumerable.Range(0, (stop - start + step - 1) / step).Select(i => start + i * step).ToArray();
        }
        else
        {
            layers = spec.Split(',').Select(p => Int(p.Trim(), bad, what)).ToArray();
            foreach (var l in layers)
                if (l < 0 || l >= count) throw bad($"{what} {l} is out of range");
            if (layers.Distinct().Count() != layers.Length) throw bad($"a {what} is listed twice");
        }
        return layers;
    }

    private static int Int(string s, Func<string, LensException> bad, string what) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw bad($"'{s}' is not a {what} number");

    private static LensException Bad(string spec, int n, string numbering, string why) => numbering == LayerNumbering.Lens
        ? new($"bad layer selection '{spec}': {why}; this text encoder has {n} layers (0..{n - 1}); use all, a list like 0,3,5 or a range like 0:{n}:2")
        : new($"bad layer selection '{spec}' in hidden-state numbering: {why}; this text encoder has {n + 1} hidden states (0..{n}: 0 = the embedding output, k = the output of layer k-1); use all, a list like 0,4,8 or a range like 0:{n + 1}:2");
}
