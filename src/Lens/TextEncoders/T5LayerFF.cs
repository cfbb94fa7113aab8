using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>transformers <c>T5LayerFF</c>: x + DenseReluDense(layer_norm(x)) (gated or not, per the config).</summary>
internal sealed class T5LayerFF : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> DenseReluDense;
    private readonly T5LayerNorm layer_norm;

    public T5LayerFF(T5Config config, Device? device = null, ScalarType dtype = ScalarType.Float32, ScalarType? woDtype = null)
        : base(nameof(T5LayerFF))
    {
        DenseReluDense = config.IsGatedAct
            ? new T5DenseGatedActDense(config, device, dtype, woDtype)
            : new T5DenseActDense(config, device, dtype, woDtype);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var forwarded = layer_norm.forward(hiddenStates);
        forwarded = DenseReluDense.forward(forwarded);
        return (hiddenStates + forwarded).MoveToOuterDisposeScope();
    }
}
