using DiffusionLens.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Sweep;

/// <summary>
/// <c>--seed-policy continue</c>: ONE CPU generator, seeded once, consumed by every layer's pipeline call(s) in layer
/// order (the paper's original code; with a stage II, layer L's stage I call then its stage II call, then layer L+1's).
/// So that layers denoised together draw exactly what that serial loop draws, each layer gets a copy of the generator in
/// the state the previous layers' calls leave it in, found by replaying their draws on the CPU.
/// </summary>
internal static class LayerGenerators
{
    /// <summary>
    /// The generator of each of <paramref name="layers"/> layers at the start of its first call: layer 0's is seeded
    /// with <paramref name="seed"/>; layer i + 1's is layer i's after <paramref name="consumeLayer"/> (which makes all of
    /// one layer's draws from the generator it is given). The caller disposes the generators.
    /// </summary>
    public static List<Generator> Continue(long seed, int layers, Action<Generator> consumeLayer)
    {
        var result = new List<Generator>(layers);
        using var running = new Generator((ulong)seed);
        for (int i = 0; i < layers; i++)
        {
            result.Add(NoisePlan.Fork(running));
            if (i + 1 < layers) consumeLayer(running);
        }
        return result;
    }

    /// <summary>Whether two CPU generators are in the same state (their state bytes are equal).</summary>
    public static bool SameState(Generator a, Generator b)
    {
        using var sa = a.get_state();
        using var sb = b.get_state();
        return sa.data<byte>().ToArray().AsSpan().SequenceEqual(sb.data<byte>().ToArray());
    }
}
