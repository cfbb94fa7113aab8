using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>Transformer2DModel</c> (models/transformers/transformer_2d.py) for continuous input: GroupNorm (key
/// <c>norm</c>, eps 1e-6) -> proj_in (1x1 conv, or Linear after flattening when use_linear_projection) ->
/// transformer_blocks -> proj_out -> + residual.
/// </summary>
internal sealed class Transformer2DModel : nn.Module<Tensor, Tensor?, Tensor?, Tensor?, Tensor>
{
    private readonly GroupNorm norm;
    private readonly nn.Module<Tensor, Tensor> proj_in;
    private readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly nn.Module<Tensor, Tensor> proj_out;

    public int InnerDim { get; }
    public int NumLayers { get; }

    public Transformer2DModel(int numAttentionHeads = 16, int attentionHeadDim = 88, int? inChannels = null,
        int? outChannels = null, int numLayers = 1, double dropout = 0.0, int? normNumGroups = 32,
        int? crossAttentionDim = null, bool attentionBias = false, string activationFn = "geglu",
        bool useLinearProjection = false, bool onlyCrossAttention = false, bool doubleSelfAttention = false,
        bool upcastAttention = false, string normType = "layer_norm", bool normElementwiseAffine = true,
        double normEps = 1e-5, string attentionType = "default") : base(nameof(Transformer2DModel))
    {
        if (inChannels is not int inC)
            throw new LensException("Transformer2DModel: only continuous input (in_channels set, no patch_size / num_vector_embeds) is supported");
        if (normNumGroups is not int groups)
            throw new LensException("Transformer2DModel: norm_num_groups is null (resnet_groups / norm_num_groups must be set)");
        int outC = outChannels ?? inC;
        InnerDim = numAttentionHeads * attentionHeadDim;
        NumLayers = numLayers;

        norm = Norms.GroupNorm(groups, inC, 1e-6, affine: true);
        proj_in = useLinearProjection
            ? Layers.Linear(inC, InnerDim)
            : Layers.Conv2d(inC, InnerDim, 1L, stride: 1L, padding: 0L);

        var blocks = new BasicTransformerBlock[numLayers];
        for (int i = 0; i < numLayers; i++)
            blocks[i] = new BasicTransformerBlock(InnerDim, numAttentionHeads, attentionHeadDim, dropout: dropout,
                crossAttentionDim: crossAttentionDim, activationFn: activationFn, attentionBias: attentionBias,
                onlyCrossAttention: onlyCrossAttention, doubleSelfAttention: doubleSelfAttention,
                upcastAttention: upcastAttention, normType: normType, normElementwiseAffine: normElementwiseAffine,
                normEps: normEps, attentionType: attentionType);
        transformer_blocks = new ModuleList<BasicTransformerBlock>(blocks);

        proj_out = useLinearProjection
            ? Layers.Linear(InnerDim, outC)
            : Layers.Conv2d(InnerDim, outC, 1L, stride: 1L, padding: 0L);
        RegisterComponents();
    }

    /// <param name="hidden">[B, C, H, W]</param>
    /// <param name="encoderHidden">[B, T, D] for cross-attention</param>
    /// <param name="attentionMask">[B, L] keep-mask (converted to a bias) or an already prepared bias [B, 1, L]</param>
    /// <param name="encoderAttentionMask">[B, T] keep-mask (converted to a bias) or an already prepared bias [B, 1, T]</param>
    public override Tensor forward(Tensor hidden, Tensor? encoderHidden, Tensor? attentionMask, Tensor? encoderAttentionMask)
    {
        using var scope = NewDisposeScope();
        if (attentionMask is not null && attentionMask.ndim == 2)
            attentionMask = ((1 - attentionMask.to(hidden.dtype)) * -10000.0).unsqueeze(1);
        if (encoderAttentionMask is not null && encoderAttentionMask.ndim == 2)
            encoderAttentionMask = ((1 - encoderAttentionMask.to(hidden.dtype)) * -10000.0).unsqueeze(1);

        var residual = hidden;

        // _operate_on_continuous_inputs; each intermediate is released as soon as the next one exists (TensorScopes.Then)
        var h = norm.forward(hidden);
        h = TensorScopes.Then(h, BatchInvariance.Run(h, ((IBatchInvariant)proj_in).Invariance, ProjIn), hidden);

        foreach (var block in transformer_blocks)
            h = TensorScopes.Then(h, block.forward(h, attentionMask, encoderHidden, encoderAttentionMask), hidden);

        // _get_output_for_continuous_inputs, + residual
        return BatchInvariance.Run(new[] { h, residual }, ((IBatchInvariant)proj_out).Invariance, a => ProjOutPlus(a[0], a[1]))
            .MoveToOuterDisposeScope();
    }

    /// <summary>proj_in's or proj_out's weight as a matrix [out, in] (a 1x1 convolution's [out, in, 1, 1] viewed).</summary>
    private static (Tensor Weight, Tensor? Bias) Matrix(nn.Module<Tensor, Tensor> projection) => projection switch
    {
        Conv2d c => (c.weight.view(c.OutChannels, c.InChannels), c.bias),
        Linear l => (l.weight, l.bias),
        _ => throw new InvalidOperationException($"Transformer2DModel: unexpected projection {projection.GetType().Name}"),
    };

    /// <summary>
    /// proj_in of the group norm's output [B, C, H, W], as tokens [B, H*W, inner]: diffusers' 1x1 convolution then
    /// permute copy (or permute copy then Linear, with use_linear_projection) is one batched GEMM that reads the
    /// channels-first input through a transposed view, x_b^T W^T + b: the same products, without the permute copy or
    /// cuDNN's layout conversions around a 1x1 convolution.
    /// </summary>
    private Tensor ProjIn(Tensor normed)
    {
        using var scope = NewDisposeScope();
        var (w, bias) = Matrix(proj_in);
        long b = normed.shape[0], c = normed.shape[1], tokens = normed.shape[2] * normed.shape[3], o = w.shape[0];
        var x = normed.reshape(b, c, tokens).transpose(1, 2);
        var wt = w.t().expand(b, c, o);
        var output = bias is null ? torch.bmm(x, wt) : Baddbmm.Apply(bias.expand(b, tokens, o), x, wt);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// proj_out of the tokens [B, H*W, inner] plus the residual [B, C, H, W]: one batched GEMM writing channels-first
    /// output (W h_b^T + b, reading the tokens through a transposed view), then the residual added in place: diffusers'
    /// sums in its order (projection with bias, then + residual), without the permute copy and cuDNN's layout
    /// conversions around a 1x1 convolution (or the permute copy after a Linear).
    /// </summary>
    private Tensor ProjOutPlus(Tensor tokens, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var (w, bias) = Matrix(proj_out);
        long b = residual.shape[0], o = w.shape[0], n = tokens.shape[1];
        var wb = w.expand(b, o, w.shape[1]);
        var ht = tokens.transpose(1, 2);
        var output = bias is null ? torch.bmm(wb, ht) : Baddbmm.Apply(bias.view(o, 1).expand(b, o, n), wb, ht);
        // output + residual, in the fresh output buffer (a + b == b + a exactly)
        return output.add_(residual.reshape(b, o, n)).view(residual.shape).MoveToOuterDisposeScope();
    }
}
