using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>transformers <c>T5LayerSelfAttention</c>: x + SelfAttention(layer_norm(x), position_bias).</summary>
internal sealed class T5LayerSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly T5Attention SelfAttention;
    private readonly T5LayerNorm layer_norm;

    public T5LayerSelfAttention(T5Config config, bool hasRelativeAttentionBias, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(T5LayerSelfAttention))
    {
        SelfAttention = new T5Attention(config, hasRelativeAttentionBias, device, dtype);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public T5Attention Attention => SelfAttention;

    public override Tensor forward(Tensor hiddenStates, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        var normed = layer_norm.forward(hiddenStates);
        var attentionOutput = SelfAttention.forward(normed, positionBias);
        return (hiddenStates + attentionOutput).MoveToOuterDisposeScope();
    }
}
