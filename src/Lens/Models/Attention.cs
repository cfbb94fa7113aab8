using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>Which diffusers attention processor an <see cref="Attention"/> runs.</summary>
internal enum AttentionProcessorKind
{
    /// <summary><c>AttnProcessor2_0</c>: optional group norm, q from hidden, k/v from the encoder states (or hidden), SDPA.</summary>
    AttnProcessor2_0,
    /// <summary><c>AttnAddedKVProcessor2_0</c>: k/v of the encoder states through add_k_proj/add_v_proj, concatenated before the self k/v.</summary>
    AttnAddedKVProcessor2_0,
}

/// <summary>
/// diffusers <c>Attention</c> (models/attention_processor.py) with the processors <c>AttnProcessor2_0</c> and
/// <c>AttnAddedKVProcessor2_0</c>. Keys: to_q, to_k, to_v, to_out.0 (to_out.1 is Dropout), optional group_norm,
/// norm_cross (LayerNorm or GroupNorm), add_k_proj, add_v_proj.
/// SDPA is called without an explicit scale, as diffusers does (default 1/sqrt(head_dim)); upcast_attention and
/// upcast_softmax do not change these processors (they only matter to the legacy AttnProcessor).
/// </summary>
internal sealed class Attention : nn.Module<Tensor, Tensor?, Tensor?, Tensor>, IBatchInvariant
{
    private readonly GroupNorm? group_norm;
    private readonly nn.Module<Tensor, Tensor>? norm_cross;
    private readonly Linear to_q;
    private readonly Linear? to_k;
    private readonly Linear? to_v;
    private readonly Linear? add_k_proj;
    private readonly Linear? add_v_proj;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;

    private readonly bool _crossNormIsGroup;
    private readonly double _rescaleOutputFactor;
    private readonly bool _residualConnection;
    private readonly bool _onlyCrossAttention;

    public int Heads { get; }
    public int DimHead { get; }
    public int InnerDim { get; }
    public int QueryDim { get; }
    public int CrossAttentionDim { get; }
    public bool IsCrossAttention { get; }
    public bool UpcastAttention { get; }
    public bool UpcastSoftmax { get; }
    public int? AddedKvProjDim { get; }
    public AttentionProcessorKind Processor { get; }
    /// <summary>True for the VAE mid-block attention, whose old checkpoints name to_q/to_k/to_v/to_out.0 query/key/value/proj_attn.</summary>
    public bool FromDeprecatedAttnBlock { get; }

    /// <summary>Key renames diffusers applies on load to attention blocks built with _from_deprecated_attn_block.</summary>
    public static readonly IReadOnlyDictionary<string, string> DeprecatedKeyRenames = new Dictionary<string, string>
    {
        ["query"] = "to_q", ["key"] = "to_k", ["value"] = "to_v", ["proj_attn"] = "to_out.0",
    };

    public Attention(int queryDim, int? crossAttentionDim = null, int heads = 8, int dimHead = 64, double dropout = 0.0,
        bool bias = false, bool upcastAttention = false, bool upcastSoftmax = false, string? crossAttentionNorm = null,
        int crossAttentionNormNumGroups = 32, int? addedKvProjDim = null, bool addedProjBias = true,
        int? normNumGroups = null, bool outBias = true, bool onlyCrossAttention = false, double eps = 1e-5,
        double rescaleOutputFactor = 1.0, bool residualConnection = false, bool fromDeprecatedAttnBlock = false,
        AttentionProcessorKind? processor = null) : base(nameof(Attention))
    {
        InnerDim = dimHead * heads;
        QueryDim = queryDim;
        IsCrossAttention = crossAttentionDim is not null;
        CrossAttentionDim = crossAttentionDim ?? queryDim;
        UpcastAttention = upcastAttention;
        UpcastSoftmax = upcastSoftmax;
        Heads = heads;
        DimHead = dimHead;
        AddedKvProjDim = addedKvProjDim;
        FromDeprecatedAttnBlock = fromDeprecatedAttnBlock;
        _rescaleOutputFactor = rescaleOutputFactor;
        _residualConnection = residualConnection;
        _onlyCrossAttention = onlyCrossAttention;

        if (addedKvProjDim is null && onlyCrossAttention)
            throw new LensException("Attention: only_cross_attention can only be set when added_kv_proj_dim is set");

        if (normNumGroups is int g)
            group_norm = Norms.GroupNorm(g, queryDim, eps, affine: true);

        switch (crossAttentionNorm)
        {
            case null: break;
            case "layer_norm":
                norm_cross = Layers.LayerNorm(CrossAttentionDim);
                break;
            case "group_norm":
                norm_cross = Norms.GroupNorm(crossAttentionNormNumGroups, addedKvProjDim ?? CrossAttentionDim, 1e-5, affine: true);
                _crossNormIsGroup = true;
                break;
            default:
                throw new LensException($"unsupported cross_attention_norm '{crossAttentionNorm}' (expected null, 'layer_norm' or 'group_norm')");
        }

        to_q = Layers.Linear(queryDim, InnerDim, hasBias: bias);
        if (!onlyCrossAttention)
        {
            to_k = Layers.Linear(CrossAttentionDim, InnerDim, hasBias: bias);
            to_v = Layers.Linear(CrossAttentionDim, InnerDim, hasBias: bias);
        }
        if (addedKvProjDim is int a)
        {
            add_k_proj = Layers.Linear(a, InnerDim, hasBias: addedProjBias);
            add_v_proj = Layers.Linear(a, InnerDim, hasBias: addedProjBias);
        }
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(
            Layers.Linear(InnerDim, queryDim, hasBias: outBias),
            nn.Dropout(dropout));

        Processor = processor ?? (addedKvProjDim is null ? AttentionProcessorKind.AttnProcessor2_0 : AttentionProcessorKind.AttnAddedKVProcessor2_0);
        if (Processor == AttentionProcessorKind.AttnAddedKVProcessor2_0)
        {
            if (add_k_proj is null) throw new LensException("Attention: AttnAddedKVProcessor2_0 needs added_kv_proj_dim");
            if (group_norm is null) throw new LensException("Attention: AttnAddedKVProcessor2_0 needs a group_norm (norm_num_groups)");
        }
        RegisterComponents();
    }

    /// <param name="hidden">[B, C, H, W] or [B, L, C]</param>
    /// <param name="encoderHidden">[B, T, D] or null for self-attention</param>
    /// <param name="attentionMask">additive bias, e.g. [B, 1, T] (as UNet2DConditionModel prepares it)</param>
    public override Tensor forward(Tensor hidden, Tensor? encoderHidden, Tensor? attentionMask) =>
        Processor == AttentionProcessorKind.AttnProcessor2_0
            ? ForwardSdpa(hidden, encoderHidden, attentionMask)
            : ForwardAddedKV(hidden, encoderHidden, attentionMask);

    public Tensor forward(Tensor hidden) => forward(hidden, null, null);

    /// <summary>diffusers <c>AttnProcessor2_0.__call__</c>.</summary>
    private Tensor ForwardSdpa(Tensor hidden, Tensor? encoderHidden, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var residual = hidden;
        var inputNdim = hidden.ndim;
        long channel = 0, height = 0, width = 0;
        if (inputNdim == 4)
        {
            (channel, height, width) = (hidden.shape[1], hidden.shape[2], hidden.shape[3]);
            hidden = hidden.view(hidden.shape[0], channel, height * width).transpose(1, 2);
        }
        var refShape = encoderHidden is null ? hidden.shape : encoderHidden.shape;
        long batchSize = refShape[0], sequenceLength = refShape[1];

        if (attentionMask is not null)
        {
            attentionMask = PrepareAttentionMask(attentionMask, sequenceLength, batchSize, 3)!;
            attentionMask = attentionMask.view(batchSize, Heads, -1, attentionMask.shape[^1]);
        }

        if (group_norm is not null)
            hidden = group_norm.forward(hidden.transpose(1, 2)).transpose(1, 2);

        var query = to_q.forward(hidden);
        if (encoderHidden is null) encoderHidden = hidden;
        else if (norm_cross is not null) encoderHidden = NormEncoderHiddenStates(encoderHidden);

        if (to_k is null || to_v is null) throw new LensException("Attention: AttnProcessor2_0 needs to_k/to_v (only_cross_attention is set)");
        var key = to_k.forward(encoderHidden);
        var value = to_v.forward(encoderHidden);

        long innerDim = key.shape[^1];
        long headDim = innerDim / Heads;
        query = query.view(batchSize, -1, Heads, headDim).transpose(1, 2);
        key = key.view(batchSize, -1, Heads, headDim).transpose(1, 2);
        value = value.view(batchSize, -1, Heads, headDim).transpose(1, 2);

        var h = Sdpa(query, key, value, attentionMask);
        h = h.transpose(1, 2).reshape(batchSize, -1, Heads * headDim);
        if (h.dtype != query.dtype) h = h.to(query.dtype);

        h = to_out[0].forward(h);
        h = to_out[1].forward(h);

        if (inputNdim == 4)
            h = SameLayoutAtEveryBatch(h.transpose(-1, -2).reshape(batchSize, channel, height, width));
        if (_residualConnection) h = h + residual;
        if (_rescaleOutputFactor != 1.0) h = h / _rescaleOutputFactor;
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The attention's [B, C, H, W] output, a channels-last view of [B, H*W, C], as is; under --batch-invariant made
    /// channels-first: the residual sum's layout (and so every later kernel's) otherwise depends on the batch (channels-last
    /// for several rows, channels-first for one), and cuDNN's numbers on the layout.
    /// </summary>
    private static Tensor SameLayoutAtEveryBatch(Tensor h) => BatchInvariance.CurrentLayers > 0 ? h.contiguous() : h;

    /// <summary>diffusers <c>AttnAddedKVProcessor2_0.__call__</c> (the residual is always added; no rescale).</summary>
    private Tensor ForwardAddedKV(Tensor hidden, Tensor? encoderHidden, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var residual = hidden;
        hidden = hidden.view(hidden.shape[0], hidden.shape[1], -1).transpose(1, 2);
        long batchSize = hidden.shape[0], sequenceLength = hidden.shape[1];

        attentionMask = PrepareAttentionMask(attentionMask, sequenceLength, batchSize, 4);

        if (encoderHidden is null) encoderHidden = hidden;
        else if (norm_cross is not null) encoderHidden = NormEncoderHiddenStates(encoderHidden);

        hidden = group_norm!.forward(hidden.transpose(1, 2)).transpose(1, 2);

        var query = HeadToBatchDim(to_q.forward(hidden), 4);
        var encKey = HeadToBatchDim(add_k_proj!.forward(encoderHidden), 4);
        var encValue = HeadToBatchDim(add_v_proj!.forward(encoderHidden), 4);

        Tensor key, value;
        if (!_onlyCrossAttention)
        {
            key = HeadToBatchDim(to_k!.forward(hidden), 4);
            value = HeadToBatchDim(to_v!.forward(hidden), 4);
            key = torch.cat(new[] { encKey, key }, 2);
            value = torch.cat(new[] { encValue, value }, 2);
        }
        else
        {
            key = encKey;
            value = encValue;
        }

        var h = Sdpa(query, key, value, attentionMask);
        h = h.transpose(1, 2).reshape(batchSize, -1, residual.shape[1]);

        h = to_out[0].forward(h);
        h = to_out[1].forward(h);

        h = SameLayoutAtEveryBatch(h.transpose(-1, -2).reshape(residual.shape));
        h = h + residual;
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers <c>Attention.head_to_batch_dim</c>.</summary>
    public Tensor HeadToBatchDim(Tensor tensor, int outDim = 3)
    {
        long batchSize, seqLen, dim, extraDim;
        if (tensor.ndim == 3) { (batchSize, seqLen, dim) = (tensor.shape[0], tensor.shape[1], tensor.shape[2]); extraDim = 1; }
        else { (batchSize, extraDim, seqLen, dim) = (tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3]); }
        var t = tensor.reshape(batchSize, seqLen * extraDim, Heads, dim / Heads).permute(0, 2, 1, 3);
        if (outDim == 3) t = t.reshape(batchSize * Heads, seqLen * extraDim, dim / Heads);
        return t;
    }

    /// <summary>
    /// diffusers <c>Attention.prepare_attention_mask</c>, including its padding by <paramref name="targetLength"/>
    /// (not by the missing length) when the mask is shorter than the target.
    /// </summary>
    public Tensor? PrepareAttentionMask(Tensor? attentionMask, long targetLength, long batchSize, int outDim = 3)
    {
        if (attentionMask is null) return null;
        long currentLength = attentionMask.shape[^1];
        if (currentLength != targetLength)
            attentionMask = nn.functional.pad(attentionMask, new long[] { 0, targetLength }, PaddingModes.Constant, 0.0);
        if (outDim == 3)
        {
            if (attentionMask.shape[0] < batchSize * Heads)
                attentionMask = attentionMask.repeat_interleave(Heads, 0, attentionMask.shape[0] * Heads);
        }
        else if (outDim == 4)
        {
            attentionMask = attentionMask.unsqueeze(1);
            attentionMask = attentionMask.repeat_interleave(Heads, 1, attentionMask.shape[1] * Heads);
        }
        return attentionMask;
    }

    /// <summary>diffusers <c>Attention.norm_encoder_hidden_states</c>.</summary>
    public Tensor NormEncoderHiddenStates(Tensor encoderHidden)
    {
        if (norm_cross is null) throw new InvalidOperationException("norm_cross is not defined");
        if (!_crossNormIsGroup) return norm_cross.forward(encoderHidden);
        return norm_cross.forward(encoderHidden.transpose(1, 2)).transpose(1, 2);
    }

    /// <summary>Per input shape: how the attention kernel gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("Attention");

    private Tensor Sdpa(Tensor query, Tensor key, Tensor value, Tensor? mask) =>
        mask is null
            ? BatchInvariance.Run(new[] { query, key, value }, Invariance, a => nn.functional.scaled_dot_product_attention(a[0], a[1], a[2], null, 0.0, false))
            : BatchInvariance.Run(new[] { query, key, value, mask }, Invariance, a => nn.functional.scaled_dot_product_attention(a[0], a[1], a[2], a[3], 0.0, false));
}
