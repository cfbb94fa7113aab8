using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>Debugging (LENS_ROW_TRACE=1): an exact hash of the first layer's rows of a tensor, on stderr.</summary>
internal static class RowTrace
{
    public static readonly bool On = Environment.GetEnvironmentVariable("LENS_ROW_TRACE") == "1";
    private static int _n;

    public static void Print(string tag, Tensor? x)
    {
        if (!On || x is null || x.ndim < 1) return;
        using var scope = NewDisposeScope();
        long layers = Math.Max(1, BatchInvariance.CurrentLayers);
        long rows = x.shape[0] % layers == 0 ? x.shape[0] / layers : x.shape[0];
        var r = x.narrow(0, 0, rows).contiguous();
        var v = r.flatten().to(ScalarType.Float64);
        var w = torch.arange(v.numel(), dtype: ScalarType.Int64, device: v.device).remainder(997).to(ScalarType.Float64) + 1;
        double h = (v * w).sum().item<double>();
        Console.Error.WriteLine($"rowtrace {_n++} {tag} [{string.Join("x", x.shape)}] {h:R} {(x.is_contiguous() ? "c" : "")}{(Kernels.FusedKernels.IsChannelsLast(x) ? "cl" : "")} {Kernels.FusedKernels.Address(x) % 512}");
    }
}
