using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// <c>torch.baddbmm(input, batch1, batch2)</c> = input + batch1 @ batch2 (beta = alpha = 1). TorchSharp 0.107 passes
/// its arguments to the native call in another order than the native side reads them (its
/// <c>torch.baddbmm(a, b, c)</c> computes c + a @ b), so the order is found once, on three 1x1x1 CPU tensors, and
/// the call made accordingly: right with this TorchSharp and with one that fixes the order.
/// </summary>
internal static class Baddbmm
{
    private static readonly Lazy<bool> SwappedOrder = new(() =>
    {
        using var scope = NewDisposeScope(); // the three inputs and the result
        var c = full(new long[] { 1, 1, 1 }, 1f);
        var a = full(new long[] { 1, 1, 1 }, 2f);
        var b = full(new long[] { 1, 1, 1 }, 3f);
        var r = baddbmm(c, a, b).item<float>();
        return r switch
        {
            7f => false, // 1 + 2 * 3
            5f => true,  // 3 + 1 * 2: input read as batch1, batch1 as batch2, batch2 as input
            _ => throw new InvalidOperationException($"torch.baddbmm gave {r} for 1 + 2 * 3 in either argument order"),
        };
    });

    /// <summary><paramref name="input"/> + <paramref name="batch1"/> @ <paramref name="batch2"/> in one batched GEMM (input broadcast to the result).</summary>
    public static Tensor Apply(Tensor input, Tensor batch1, Tensor batch2) =>
        SwappedOrder.Value ? baddbmm(batch1, batch2, input) : baddbmm(input, batch1, batch2);
}
