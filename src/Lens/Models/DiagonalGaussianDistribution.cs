using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>DiagonalGaussianDistribution</c> (models/autoencoders/vae.py): the VAE encoder moments split into
/// mean and logvar along channels, logvar clamped to [-30, 20]. Owns its tensors; dispose it when done.
/// </summary>
internal sealed class DiagonalGaussianDistribution : IDisposable
{
    /// <summary>The raw moments [B, 2*latent_channels, h, w] (quant_conv output).</summary>
    public Tensor Parameters { get; }
    public Tensor Mean { get; }
    public Tensor LogVar { get; }
    public Tensor Std { get; }
    public Tensor Var { get; }

    public DiagonalGaussianDistribution(Tensor parameters)
    {
        Parameters = parameters;
        var parts = parameters.chunk(2, 1);
        Mean = parts[0];
        using (var lv = parts[1]) LogVar = torch.clamp(lv, -30.0, 20.0);
        using (var half = 0.5 * LogVar) Std = torch.exp(half);
        Var = torch.exp(LogVar);
    }

    /// <summary>The distribution's mode (its mean), as <c>latent_dist.mode()</c>.</summary>
    public Tensor Mode() => Mean.alias();

    /// <summary><c>mean + std * randn</c> with noise drawn on the parameters' device and dtype.</summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var noise = torch.randn(Mean.shape, dtype: Parameters.dtype, device: Parameters.device, generator: generator);
        using var scaled = Std * noise;
        return Mean + scaled;
    }

    public void Dispose()
    {
        Mean.Dispose(); LogVar.Dispose(); Std.Dispose(); Var.Dispose(); Parameters.Dispose();
    }
}
