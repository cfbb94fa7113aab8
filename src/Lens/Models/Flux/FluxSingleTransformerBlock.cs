using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FluxSingleTransformerBlock</c>, the single-stream block over the joint sequence [context; image]:
/// AdaLayerNormZeroSingle (norm), in parallel an attention without output projection (attn, pre_only) and an MLP
/// (proj_mlp, tanh-GELU), concatenated and projected back (proj_out), gated residual. float16 states are clipped to
/// ±65504, as diffusers does.
/// </summary>
internal sealed class FluxSingleTransformerBlock : nn.Module
{
    private readonly AdaLayerNormZeroSingle norm;
    private readonly Linear proj_mlp;
    private readonly Linear proj_out;
    private readonly FluxAttention attn;

    public FluxSingleTransformerBlock(int dim, int numAttentionHeads, int attentionHeadDim, double mlpRatio = 4.0) : base(nameof(FluxSingleTransformerBlock))
    {
        int mlpHidden = (int)(dim * mlpRatio);
        norm = new AdaLayerNormZeroSingle(dim);
        proj_mlp = Layers.Linear(dim, mlpHidden);
        proj_out = Layers.Linear(dim + mlpHidden, dim);
        attn = new FluxAttention(dim, numAttentionHeads, attentionHeadDim, bias: true, addedKvProjDim: null, eps: 1e-6, preOnly: true, outDim: dim);
        RegisterComponents();
    }

    /// <returns>(context states, image states), split from the joint sequence at the context's length</returns>
    public (Tensor Context, Tensor Hidden) Forward(Tensor hidden, Tensor context, Tensor temb, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long textLen = context.shape[1];
        var joint = torch.cat(new[] { context, hidden }, 1);
        var (nh, gate) = norm.Modulate(joint, temb);
        var mlp = nn.functional.gelu(proj_mlp.forward(nh), TorchSharp.Modules.GELU.Approximate.tanh);
        var (attnOut, _) = attn.Forward(nh, null, cos, sin);
        var h = gate.unsqueeze(1) * proj_out.forward(torch.cat(new[] { attnOut, mlp }, 2));
        joint = joint + h;
        if (joint.dtype == ScalarType.Float16) joint = joint.clip(-65504, 65504);
        return (joint.narrow(1, 0, textLen).MoveToOuterDisposeScope(), joint.narrow(1, textLen, joint.shape[1] - textLen).MoveToOuterDisposeScope());
    }
}
