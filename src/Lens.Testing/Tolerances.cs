namespace DiffusionLens.Testing;

/// <summary>Parity tolerances: relative L2 and max-abs (scaled by max(1, max|ref|)) for hidden states, 8-bit levels for images.</summary>
/// <param name="HiddenRel">Largest relative L2 error ||a - b|| / ||b|| of a tensor.</param>
/// <param name="HiddenAbs">Largest max |a - b|, times max(1, max|b|).</param>
/// <param name="ImageLevels">Largest difference of any 8-bit channel of any pixel.</param>
public sealed record Tolerances(double HiddenRel, double HiddenAbs, double ImageLevels);
