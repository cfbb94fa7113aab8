namespace DiffusionLens.Findings;

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): a small seeded generator whose sequence is fixed by its definition, so a
/// bootstrap gives the same intervals on every .NET version and platform (System.Random's algorithm is not specified).
/// </summary>
internal sealed class SplitMix64
{
    private ulong _state;

    public SplitMix64(ulong seed) => _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, n) by Lemire's multiply-shift with rejection (unbiased).</summary>
    public int NextInt(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        ulong un = (ulong)n;
        ulong threshold = (0UL - un) % un;
        while (true)
        {
            ulong x = Next();
            UInt128 m = (UInt128)x * un;
            if ((ulong)m >= threshold) return (int)(ulong)(m >> 64);
        }
    }
}
