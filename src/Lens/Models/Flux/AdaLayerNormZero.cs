using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>AdaLayerNormZero</c> (models/normalization.py) as FLUX's double-stream blocks build it (no class
/// embedding, layer_norm): emb = linear(silu(emb)) split in six (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
/// gate_mlp); x = norm(x) * (1 + scale_msa) + shift_msa with a LayerNorm without affine parameters, eps 1e-6. Key linear.
/// </summary>
internal sealed class AdaLayerNormZero : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear linear;
    private readonly LayerNorm norm;

    public AdaLayerNormZero(int embeddingDim, bool bias = true) : base(nameof(AdaLayerNormZero))
    {
        linear = Layers.Linear(embeddingDim, 6L * embeddingDim, hasBias: bias);
        norm = Layers.LayerNorm(embeddingDim, 1e-6, elementwise_affine: false);
        RegisterComponents();
    }

    /// <summary>The normed input and gate_msa, shift_mlp, scale_mlp, gate_mlp ([B, D] each).</summary>
    public (Tensor X, Tensor GateMsa, Tensor ShiftMlp, Tensor ScaleMlp, Tensor GateMlp) Modulate(Tensor x, Tensor emb)
    {
        var e = linear.forward(nn.functional.silu(emb)).chunk(6, 1);
        var h = norm.forward(x) * (1 + e[1].unsqueeze(1)) + e[0].unsqueeze(1);
        return (h, e[2], e[3], e[4], e[5]);
    }

    public override Tensor forward(Tensor x, Tensor emb) => Modulate(x, emb).X;
}
