using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>CLIPAttention</c> through the default "sdpa" attention interface (integrations/sdpa_attention.py):
/// q/k/v projections, heads split as view(b, s, -1, head_dim).transpose(1, 2), then
/// <c>scaled_dot_product_attention(q, k, v, attn_mask, scale=head_dim**-0.5, is_causal=...)</c>, where
/// is_causal = seq_len &gt; 1 and no mask is given (the text model asks for causal attention and transformers' mask
/// builder drops the mask when there is no padding), transpose back, reshape, out_proj.
/// TorchSharp's SDPA has no <c>scale</c> argument: PyTorch's default scale is 1/sqrt(head_dim) computed in double;
/// it can differ from head_dim**-0.5 by one double ulp for some head sizes, but the CPU kernels use the scale as a
/// float32, where the two are equal for every head size from 1 to 4096 (checked for the common ones: 4..128).
/// </summary>
internal sealed class ClipAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly Models.Linear k_proj;
    private readonly Models.Linear v_proj;
    private readonly Models.Linear q_proj;
    private readonly Models.Linear out_proj;
    private readonly long _numHeads;
    private readonly long _headDim;

    public ClipAttention(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipAttention))
    {
        long d = config.HiddenSize;
        _numHeads = config.NumAttentionHeads;
        _headDim = d / _numHeads;
        k_proj = TextEncoderParts.Linear(d, d, true, device, dtype);
        v_proj = TextEncoderParts.Linear(d, d, true, device, dtype);
        q_proj = TextEncoderParts.Linear(d, d, true, device, dtype);
        out_proj = TextEncoderParts.Linear(d, d, true, device, dtype);
        RegisterComponents();
    }

    /// <param name="hiddenStates">(batch, seq, hidden)</param>
    /// <param name="attnMask">null: causal attention (SDPA is_causal); otherwise a boolean (batch, 1, seq, seq) mask, true = attend,
    /// that already contains the causal pattern</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? attnMask)
    {
        using var scope = NewDisposeScope();
        long b = hiddenStates.shape[0], s = hiddenStates.shape[1];
        var queries = q_proj.forward(hiddenStates);
        var keys = k_proj.forward(hiddenStates);
        var values = v_proj.forward(hiddenStates);
        queries = queries.view(b, s, -1, _headDim).transpose(1, 2);
        keys = keys.view(b, s, -1, _headDim).transpose(1, 2);
        values = values.view(b, s, -1, _headDim).transpose(1, 2);
        bool isCausal = s > 1 && attnMask is null;
        var attn = nn.functional.scaled_dot_product_attention(queries, keys, values, attn_mask: attnMask, p: 0.0, is_casual: isCausal);
        attn = attn.transpose(1, 2).contiguous();
        attn = attn.reshape(b, s, -1).contiguous();
        return out_proj.forward(attn).MoveToOuterDisposeScope();
    }
}
