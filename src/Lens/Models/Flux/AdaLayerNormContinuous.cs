using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>AdaLayerNormContinuous</c> (models/normalization.py) with layer_norm: emb =
/// linear(silu(conditioning).to(x.dtype)) split in (scale, shift) — scale first, unlike the AdaLayerNormZero family;
/// x = norm(x) * (1 + scale) + shift. Key linear (and norm.weight/bias when elementwise_affine). FLUX's norm_out.
/// </summary>
internal sealed class AdaLayerNormContinuous : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear linear;
    private readonly LayerNorm norm;

    public AdaLayerNormContinuous(int embeddingDim, int conditioningEmbeddingDim, bool elementwiseAffine = true,
        double eps = 1e-5, bool bias = true) : base(nameof(AdaLayerNormContinuous))
    {
        linear = Layers.Linear(conditioningEmbeddingDim, 2L * embeddingDim, hasBias: bias);
        norm = Layers.LayerNorm(embeddingDim, eps, elementwise_affine: elementwiseAffine);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor conditioning)
    {
        using var scope = NewDisposeScope();
        var e = linear.forward(nn.functional.silu(conditioning).to(x.dtype)).chunk(2, 1);
        return (norm.forward(x) * (1 + e[0]).unsqueeze(1) + e[1].unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
