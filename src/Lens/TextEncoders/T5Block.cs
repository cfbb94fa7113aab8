using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5Block</c> of the encoder: layer.0 = <see cref="T5LayerSelfAttention"/>, layer.1 = <see cref="T5LayerFF"/>,
/// each followed by T5's float16 clamp (if the hidden states are float16: clamp to ±(65504 - 1000) when any value is
/// inf, else to ±65504).
/// </summary>
internal sealed class T5Block : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly ModuleList<nn.Module> layer;

    public T5Block(T5Config config, bool hasRelativeAttentionBias, Device? device = null, ScalarType dtype = ScalarType.Float32, ScalarType? woDtype = null)
        : base(nameof(T5Block))
    {
        layer = new ModuleList<nn.Module>();
        layer.Add(new T5LayerSelfAttention(config, hasRelativeAttentionBias, device, dtype));
        layer.Add(new T5LayerFF(config, device, dtype, woDtype));
        RegisterComponents();
    }

    public T5LayerSelfAttention SelfAttentionLayer => (T5LayerSelfAttention)layer[0];
    private T5LayerFF FeedForwardLayer => (T5LayerFF)layer[1];

    public override Tensor forward(Tensor hiddenStates, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        var h = SelfAttentionLayer.forward(hiddenStates, positionBias);
        h = ClampFp16(h);
        h = FeedForwardLayer.forward(h);
        h = ClampFp16(h);
        return h.MoveToOuterDisposeScope();
    }

    private static Tensor ClampFp16(Tensor h)
    {
        if (h.dtype != ScalarType.Float16) return h;
        double max = torch.finfo(ScalarType.Float16).max;
        // torch.where(isinf(h).any(), max - 1000, max) is a 0-dim float32 tensor; clamp casts it to float16
        double clampValue = torch.isinf(h).any().item<bool>() ? max - 1000 : max;
        using var lo = torch.tensor((float)-clampValue, device: h.device);
        using var hi = torch.tensor((float)clampValue, device: h.device);
        return torch.clamp(h, lo, hi);
    }
}
