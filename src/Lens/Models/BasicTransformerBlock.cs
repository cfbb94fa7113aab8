using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>BasicTransformerBlock</c> (models/attention.py), norm_type "layer_norm" only: norm1 -> attn1 (self, or
/// cross when only_cross_attention) + residual; norm2 -> attn2 (cross, or self when double_self_attention) + residual;
/// norm3 -> ff + residual.
/// </summary>
internal sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor?, Tensor?, Tensor?, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly Attention attn1;
    private readonly LayerNorm? norm2;
    private readonly Attention? attn2;
    private readonly LayerNorm norm3;
    private readonly FeedForward ff;

    private readonly bool _onlyCrossAttention;

    public BasicTransformerBlock(int dim, int numAttentionHeads, int attentionHeadDim, double dropout = 0.0,
        int? crossAttentionDim = null, string activationFn = "geglu", int? numEmbedsAdaNorm = null,
        bool attentionBias = false, bool onlyCrossAttention = false, bool doubleSelfAttention = false,
        bool upcastAttention = false, bool normElementwiseAffine = true, string normType = "layer_norm",
        double normEps = 1e-5, bool finalDropout = false, string attentionType = "default",
        string? positionalEmbeddings = null, int? ffInnerDim = null, bool ffBias = true, bool attentionOutBias = true)
        : base(nameof(BasicTransformerBlock))
    {
        if (normType != "layer_norm" || numEmbedsAdaNorm is not null)
            throw new LensException($"BasicTransformerBlock: norm_type '{normType}'{(numEmbedsAdaNorm is null ? "" : " with num_embeds_ada_norm")} is not supported (only 'layer_norm')");
        if (attentionType != "default")
            throw new LensException($"BasicTransformerBlock: attention_type '{attentionType}' is not supported (only 'default')");
        if (positionalEmbeddings is not null)
            throw new LensException($"BasicTransformerBlock: positional_embeddings '{positionalEmbeddings}' is not supported");
        _onlyCrossAttention = onlyCrossAttention;

        norm1 = Layers.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine);
        attn1 = new Attention(dim, crossAttentionDim: onlyCrossAttention ? crossAttentionDim : null, heads: numAttentionHeads,
            dimHead: attentionHeadDim, dropout: dropout, bias: attentionBias, upcastAttention: upcastAttention,
            outBias: attentionOutBias);

        if (crossAttentionDim is not null || doubleSelfAttention)
        {
            norm2 = Layers.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine);
            attn2 = new Attention(dim, crossAttentionDim: doubleSelfAttention ? null : crossAttentionDim, heads: numAttentionHeads,
                dimHead: attentionHeadDim, dropout: dropout, bias: attentionBias, upcastAttention: upcastAttention,
                outBias: attentionOutBias);
        }

        norm3 = Layers.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine);
        ff = new FeedForward(dim, dropout: dropout, activationFn: activationFn, finalDropout: finalDropout,
            innerDim: ffInnerDim, bias: ffBias);
        RegisterComponents();
    }

    /// <param name="hidden">[B, L, dim]</param>
    /// <param name="attentionMask">self-attention bias (attn1)</param>
    /// <param name="encoderHidden">[B, T, cross_attention_dim]</param>
    /// <param name="encoderAttentionMask">cross-attention bias (attn2)</param>
    public override Tensor forward(Tensor hidden, Tensor? attentionMask, Tensor? encoderHidden, Tensor? encoderAttentionMask)
    {
        using var scope = NewDisposeScope();
        // attn_output + hidden_states is added into the (fresh) attention/ff output in place, and each norm output and
        // superseded hidden state is released once used: the same arithmetic, fewer live buffers
        var input = hidden;
        var norm = norm1.forward(hidden);
        var attnOutput = attn1.forward(norm, _onlyCrossAttention ? encoderHidden : null, attentionMask);
        norm.Dispose();
        hidden = attnOutput.add_(hidden);
        if (hidden.ndim == 4) hidden = TensorScopes.Then(hidden, hidden.squeeze(1), input);

        if (attn2 is not null)
        {
            norm = norm2!.forward(hidden);
            attnOutput = attn2.forward(norm, encoderHidden, encoderAttentionMask);
            norm.Dispose();
            hidden = TensorScopes.Then(hidden, attnOutput.add_(hidden), input);
        }

        norm = norm3.forward(hidden);
        var ffOutput = ff.forward(norm);
        norm.Dispose();
        hidden = TensorScopes.Then(hidden, ffOutput.add_(hidden), input);
        if (hidden.ndim == 4) hidden = TensorScopes.Then(hidden, hidden.squeeze(1), input);
        return hidden.MoveToOuterDisposeScope();
    }
}
