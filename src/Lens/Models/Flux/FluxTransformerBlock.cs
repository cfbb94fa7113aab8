using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FluxTransformerBlock</c>, the double-stream (MM-DiT) block: the image and the context streams each
/// modulated by their AdaLayerNormZero (norm1, norm1_context), one joint <see cref="FluxAttention"/>, gated residuals,
/// then each stream's LayerNorm (norm2, norm2_context: no affine parameters, eps 1e-6) modulated by the shift/scale of
/// its MLP, a tanh-GELU FeedForward (ff, ff_context) and a gated residual. float16 context states are clipped to
/// ±65504, as diffusers does.
/// </summary>
internal sealed class FluxTransformerBlock : nn.Module
{
    private readonly AdaLayerNormZero norm1;
    private readonly AdaLayerNormZero norm1_context;
    private readonly FluxAttention attn;
    private readonly LayerNorm norm2;
    private readonly FeedForward ff;
    private readonly LayerNorm norm2_context;
    private readonly FeedForward ff_context;

    public FluxTransformerBlock(int dim, int numAttentionHeads, int attentionHeadDim, double eps = 1e-6) : base(nameof(FluxTransformerBlock))
    {
        norm1 = new AdaLayerNormZero(dim);
        norm1_context = new AdaLayerNormZero(dim);
        attn = new FluxAttention(dim, numAttentionHeads, attentionHeadDim, bias: true, addedKvProjDim: dim, eps: eps, preOnly: false, outDim: dim);
        norm2 = Layers.LayerNorm(dim, 1e-6, elementwise_affine: false);
        ff = new FeedForward(dim, dimOut: dim, activationFn: "gelu-approximate");
        norm2_context = Layers.LayerNorm(dim, 1e-6, elementwise_affine: false);
        ff_context = new FeedForward(dim, dimOut: dim, activationFn: "gelu-approximate");
        RegisterComponents();
    }

    /// <returns>(context states, image states)</returns>
    public (Tensor Context, Tensor Hidden) Forward(Tensor hidden, Tensor context, Tensor temb, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var (nh, gateMsa, shiftMlp, scaleMlp, gateMlp) = norm1.Modulate(hidden, temb);
        var (nc, cGateMsa, cShiftMlp, cScaleMlp, cGateMlp) = norm1_context.Modulate(context, temb);
        var (attnOut, ctxAttnOut) = attn.Forward(nh, nc, cos, sin);

        hidden = hidden + gateMsa.unsqueeze(1) * attnOut;
        var h2 = norm2.forward(hidden) * (1 + scaleMlp.unsqueeze(1)) + shiftMlp.unsqueeze(1);
        hidden = hidden + gateMlp.unsqueeze(1) * ff.forward(h2);

        context = context + cGateMsa.unsqueeze(1) * ctxAttnOut!;
        var c2 = norm2_context.forward(context) * (1 + cScaleMlp.unsqueeze(1)) + cShiftMlp.unsqueeze(1);
        context = context + cGateMlp.unsqueeze(1) * ff_context.forward(c2);
        if (context.dtype == ScalarType.Float16) context = context.clip(-65504, 65504);
        return (context.MoveToOuterDisposeScope(), hidden.MoveToOuterDisposeScope());
    }
}
