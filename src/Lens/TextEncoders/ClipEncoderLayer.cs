using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>CLIPEncoderLayer</c> (pre-norm): h = x + self_attn(layer_norm1(x)); out = h + mlp(layer_norm2(h)).
/// </summary>
internal sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ClipAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly ClipMlp mlp;
    private readonly LayerNorm layer_norm2;

    public ClipEncoderLayer(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipEncoderLayer))
    {
        self_attn = new ClipAttention(config, device, dtype);
        layer_norm1 = TextEncoderParts.LayerNorm(config.HiddenSize, config.LayerNormEps, device, dtype);
        mlp = new ClipMlp(config, device, dtype);
        layer_norm2 = TextEncoderParts.LayerNorm(config.HiddenSize, config.LayerNormEps, device, dtype);
        RegisterComponents();
    }

    /// <param name="attnMask">see <see cref="ClipAttention.forward"/>: null = causal</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? attnMask)
    {
        using var scope = NewDisposeScope();
        var residual = hiddenStates;
        var h = layer_norm1.forward(hiddenStates);
        h = self_attn.forward(h, attnMask);
        h = residual + h;

        residual = h;
        h = layer_norm2.forward(h);
        h = mlp.forward(h);
        h = residual + h;
        return h.MoveToOuterDisposeScope();
    }
}
