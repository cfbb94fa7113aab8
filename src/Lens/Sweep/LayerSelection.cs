using System.Globalization;

namespace DiffusionLens.Sweep;

/// <summary>
/// Which encoder layers a sweep renders: "all", a list "0,3,5", or a Python-style range "start:stop[:step]"
/// (stop exclusive; "0:12:2" = 0,2,...,10; an empty start/stop means the first/last layer).
/// </summary>
internal static class LayerSelection
{
    public static int[] Parse(string spec, int numLayers)
    {
        if (numLayers <= 0) throw new ArgumentOutOfRangeException(nameof(numLayers));
        spec = spec.Trim();
        int[] layers;
        if (spec is "all" or "") layers = Enumerable.Range(0, numLayers).ToArray();
        else if (spec.Contains(':'))
        {
            var parts = spec.Split(':');
            if (parts.Length > 3) throw Bad(spec, numLayers, "a range is start:stop or start:stop:step");
            int start = parts[0].Length == 0 ? 0 : Int(parts[0], spec, numLayers);
            int stop = parts[1].Length == 0 ? numLayers : Int(parts[1], spec, numLayers);
            int step = parts.Length == 3 && parts[2].Length > 0 ? Int(parts[2], spec, numLayers) : 1;
            if (step <= 0) throw Bad(spec, numLayers, "the step must be positive");
            if (start < 0 || start >= numLayers) throw Bad(spec, numLayers, $"start {start} is out of range");
            if (stop > numLayers || stop <= start) throw Bad(spec, numLayers, $"stop {stop} must be in {start + 1}..{numLayers}");
            layers = Enumerable.Range(0, (stop - start + step - 1) / step).Select(i => start + i * step).ToArray();
        }
        else
        {
            layers = spec.Split(',').Select(p => Int(p.Trim(), spec, numLayers)).ToArray();
            foreach (var l in layers)
                if (l < 0 || l >= numLayers) throw Bad(spec, numLayers, $"layer {l} is out of range");
            if (layers.Distinct().Count() != layers.Length) throw Bad(spec, numLayers, "a layer is listed twice");
        }
        return layers;
    }

    private static int Int(string s, string spec, int n) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw Bad(spec, n, $"'{s}' is not a layer number");

    private static LensException Bad(string spec, int n, string why) =>
        new($"bad layer selection '{spec}': {why}; this text encoder has {n} layers (0..{n - 1}); use all, a list like 0,3,5 or a range like 0:{n}:2");
}
