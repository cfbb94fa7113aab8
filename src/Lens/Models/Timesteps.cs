using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>Timesteps</c> (models/embeddings.py; key <c>time_proj</c>, no parameters): the sinusoidal
/// <see cref="GetTimestepEmbedding"/> of a 1-D timestep tensor, computed in float32.
/// </summary>
internal sealed class Timesteps : nn.Module<Tensor, Tensor>
{
    public int NumChannels { get; }
    public bool FlipSinToCos { get; }
    public double DownscaleFreqShift { get; }
    public double Scale { get; }

    public Timesteps(int numChannels, bool flipSinToCos, double downscaleFreqShift, double scale = 1) : base(nameof(Timesteps))
    {
        NumChannels = numChannels;
        FlipSinToCos = flipSinToCos;
        DownscaleFreqShift = downscaleFreqShift;
        Scale = scale;
        RegisterComponents();
    }

    public override Tensor forward(Tensor timesteps) =>
        GetTimestepEmbedding(timesteps, NumChannels, FlipSinToCos, DownscaleFreqShift, Scale);

    /// <summary>
    /// diffusers <c>get_timestep_embedding</c>: exponent = -ln(max_period) * arange(half) / (half - shift) in float32,
    /// emb = t[:, None].float() * exp(exponent)[None, :] * scale, [sin, cos] (or [cos, sin] with flip), zero-padded to an
    /// odd <paramref name="embeddingDim"/>. Result [N, embeddingDim] float32 on the timesteps' device.
    /// </summary>
    public static Tensor GetTimestepEmbedding(Tensor timesteps, int embeddingDim, bool flipSinToCos = false,
        double downscaleFreqShift = 1, double scale = 1, int maxPeriod = 10000)
    {
        if (timesteps.ndim != 1) throw new LensException($"timesteps must be a 1-D tensor, got shape [{string.Join(",", timesteps.shape)}]");
        using var scope = NewDisposeScope();
        long halfDim = embeddingDim / 2;
        var exponent = torch.arange(0, halfDim, dtype: ScalarType.Float32, device: timesteps.device) * (-Math.Log(maxPeriod));
        exponent = exponent / (halfDim - downscaleFreqShift);

        var emb = torch.exp(exponent);
        emb = timesteps.unsqueeze(1).to(ScalarType.Float32) * emb.unsqueeze(0);
        if (scale != 1) emb = emb * scale;

        emb = torch.cat(new[] { torch.sin(emb), torch.cos(emb) }, -1);
        if (flipSinToCos)
            emb = torch.cat(new[] { emb.narrow(1, halfDim, halfDim), emb.narrow(1, 0, halfDim) }, -1);
        if (embeddingDim % 2 == 1)
            emb = nn.functional.pad(emb, new long[] { 0, 1, 0, 0 }, PaddingModes.Constant, 0.0);
        return emb.MoveToOuterDisposeScope();
    }
}
