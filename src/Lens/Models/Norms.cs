using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// Normalization layers initialised as PyTorch does. TorchSharp 0.107's <c>nn.GroupNorm</c> leaves its affine
/// weight and bias uninitialised (arbitrary memory), which only matters before weights are loaded (random-init tests),
/// but then it produces NaNs; this sets weight = 1, bias = 0 (not when building for loading: see <see cref="Layers"/>).
/// </summary>
internal static class Norms
{
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps = 1e-5, bool affine = true)
    {
        var g = Layers.GroupNorm(numGroups, numChannels, eps, affine);
        if (affine && !Layers.Uninitialised)
        {
            using var _ = torch.no_grad();
            g.weight?.fill_(1.0);
            g.bias?.zero_();
        }
        return g;
    }
}
