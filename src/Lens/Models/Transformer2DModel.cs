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

    private readonly bool _useLinearProjection;

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
        _useLinearProjection = useLinearProjection;

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

        long batch = hidden.shape[0], height = hidden.shape[2], width = hidden.shape[3];
        var residual = hidden;

        // _operate_on_continuous_inputs
        // each intermediate is released as soon as the next one exists (TensorScopes.Then)
        var h = norm.forward(hidden);
        long innerDim;
        if (!_useLinearProjection)
        {
            h = TensorScopes.Then(h, proj_in.forward(h), hidden);
            innerDim = h.shape[1];
            h = TensorScopes.Then(h, h.permute(0, 2, 3, 1).reshape(batch, height * width, innerDim), hidden);
        }
        else
        {
            innerDim = h.shape[1];
            h = TensorScopes.Then(h, h.permute(0, 2, 3, 1).reshape(batch, height * width, innerDim), hidden);
            h = TensorScopes.Then(h, proj_in.forward(h), hidden);
        }

        foreach (var block in transformer_blocks)
            h = TensorScopes.Then(h, block.forward(h, attentionMask, encoderHidden, encoderAttentionMask), hidden);

        // _get_output_for_continuous_inputs
        if (!_useLinearProjection)
        {
            h = TensorScopes.Then(h, h.reshape(batch, height, width, innerDim).permute(0, 3, 1, 2).contiguous(), hidden);
            h = TensorScopes.Then(h, proj_out.forward(h), hidden);
        }
        else
        {
            h = TensorScopes.Then(h, proj_out.forward(h), hidden);
            h = TensorScopes.Then(h, h.reshape(batch, height, width, innerDim).permute(0, 3, 1, 2).contiguous(), hidden);
        }
        var output = h.add_(residual); // output + residual, in the fresh output buffer
        return output.MoveToOuterDisposeScope();
    }
}
