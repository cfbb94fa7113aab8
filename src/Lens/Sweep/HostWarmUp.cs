using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Sweep;

/// <summary>
/// The host side of a sweep's output path run once on tiny inputs during the warm-up (CUDA only, like the model
/// warm-up): the postprocessing and 8-bit conversion on the device, the copy to the host, both PNG encoders (one
/// thread, and strips on the thread pool for large images) and the grid. In a fresh process these methods are
/// otherwise compiled by .NET's JIT when the first batch's images arrive, while diffusers' warm call pays no such cost
/// (issue #11: both sides timed warm). Nothing is written and no state is kept.
/// </summary>
internal static class HostWarmUp
{
    public static void Run(Device device, int zlibLevel)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var images = torch.zeros(2, 3, 8, 8, dtype: ScalarType.Float16, device: device);
        var rgb = RgbImage.FromUnitNhwc(DenoisingPipeline.ToUnitHwc(images, onDevice: true));
        _ = rgb[0].EncodePng(zlibLevel);
        // large enough for the strip-parallel encoder (Png.ParallelMinBytes of filtered rows)
        int side = (int)Math.Ceiling(Math.Sqrt(Png.ParallelMinBytes / 3.0)) + 1;
        _ = new RgbImage(side, side).EncodePng(zlibLevel);
        _ = Grid.Compose([("warm-up 0", rgb[0]), ("warm-up 1", rgb[1])]).EncodePng(zlibLevel);
    }
}
