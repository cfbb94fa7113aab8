using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>AdaLayerNormZeroSingle</c> (models/normalization.py): emb = linear(silu(emb)) split in three
/// (shift_msa, scale_msa, gate_msa); x = norm(x) * (1 + scale_msa) + shift_msa, LayerNorm without affine parameters,
/// eps 1e-6. Key linear. FLUX's single-stream blocks.
/// </summary>
internal sealed class AdaLayerNormZeroSingle : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear linear;
    private readonly LayerNorm norm;

    public AdaLayerNormZeroSingle(int embeddingDim, bool bias = true) : base(nameof(AdaLayerNormZeroSingle))
    {
        linear = Layers.Linear(embeddingDim, 3L * embeddingDim, hasBias: bias);
        norm = Layers.LayerNorm(embeddingDim, 1e-6, elementwise_affine: false);
        RegisterComponents();
    }

    /// <summary>The normed input and gate_msa [B, D].</summary>
    public (Tensor X, Tensor Gate) Modulate(Tensor x, Tensor emb)
    {
        var e = linear.forward(nn.functional.silu(emb)).chunk(3, 1);
        return (norm.forward(x) * (1 + e[1].unsqueeze(1)) + e[0].unsqueeze(1), e[2]);
    }

    public override Tensor forward(Tensor x, Tensor emb) => Modulate(x, emb).X;
}
