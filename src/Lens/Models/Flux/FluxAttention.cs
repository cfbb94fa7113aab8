using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FluxAttention</c> with <c>FluxAttnProcessor</c> (models/transformers/transformer_flux.py). Keys: to_q,
/// to_k, to_v, norm_q, norm_k (RMSNorm over the head dimension), to_out.0 (to_out.1 is Dropout; absent when pre_only,
/// the single-stream blocks), and with added_kv_proj_dim (the double-stream blocks) add_q_proj, add_k_proj, add_v_proj,
/// norm_added_q, norm_added_k, to_add_out. The context's q/k/v come first in the joint sequence; the rotary embedding
/// is applied to q and k of the whole sequence; SDPA without a mask and with the default scale.
/// </summary>
internal sealed class FluxAttention : nn.Module, IBatchInvariant
{
    private readonly RMSNorm norm_q;
    private readonly RMSNorm norm_k;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>>? to_out;
    private readonly RMSNorm? norm_added_q;
    private readonly RMSNorm? norm_added_k;
    private readonly Linear? add_q_proj;
    private readonly Linear? add_k_proj;
    private readonly Linear? add_v_proj;
    private readonly Linear? to_add_out;

    public int HeadDim { get; }

    public FluxAttention(int queryDim, int heads, int dimHead, bool bias, int? addedKvProjDim, double eps, bool preOnly,
        int? outDim = null, bool outBias = true, bool addedProjBias = true) : base(nameof(FluxAttention))
    {
        HeadDim = dimHead;
        int inner = outDim ?? dimHead * heads;
        int outputDim = outDim ?? queryDim;
        norm_q = new RMSNorm(dimHead, eps);
        norm_k = new RMSNorm(dimHead, eps);
        to_q = Layers.Linear(queryDim, inner, hasBias: bias);
        to_k = Layers.Linear(queryDim, inner, hasBias: bias);
        to_v = Layers.Linear(queryDim, inner, hasBias: bias);
        if (!preOnly) to_out = new ModuleList<nn.Module<Tensor, Tensor>>(Layers.Linear(inner, outputDim, hasBias: outBias), nn.Dropout(0.0));
        if (addedKvProjDim is int added)
        {
            norm_added_q = new RMSNorm(dimHead, eps);
            norm_added_k = new RMSNorm(dimHead, eps);
            add_q_proj = Layers.Linear(added, inner, hasBias: addedProjBias);
            add_k_proj = Layers.Linear(added, inner, hasBias: addedProjBias);
            add_v_proj = Layers.Linear(added, inner, hasBias: addedProjBias);
            to_add_out = Layers.Linear(inner, queryDim, hasBias: outBias);
        }
        RegisterComponents();
    }

    /// <summary>[B, S, H * D] -&gt; [B, S, H, D] (diffusers' unflatten(-1, (-1, head_dim))).</summary>
    private Tensor Heads(Tensor x) => x.view(x.shape[0], x.shape[1], -1, HeadDim);

    /// <summary>
    /// The processor: returns (hidden output, context output); the context output is null without
    /// <paramref name="encoderHidden"/> (single-stream blocks, whose output is the joint sequence, not projected).
    /// </summary>
    public (Tensor Hidden, Tensor? Context) Forward(Tensor hidden, Tensor? encoderHidden, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var q = norm_q.forward(Heads(to_q.forward(hidden)));
        var k = norm_k.forward(Heads(to_k.forward(hidden)));
        var v = Heads(to_v.forward(hidden));
        if (encoderHidden is not null && add_q_proj is not null)
        {
            var eq = norm_added_q!.forward(Heads(add_q_proj.forward(encoderHidden)));
            var ek = norm_added_k!.forward(Heads(add_k_proj!.forward(encoderHidden)));
            var ev = Heads(add_v_proj!.forward(encoderHidden));
            q = torch.cat(new[] { eq, q }, 1);
            k = torch.cat(new[] { ek, k }, 1);
            v = torch.cat(new[] { ev, v }, 1);
        }
        q = FluxPosEmbed.ApplyRotaryEmb(q, cos, sin);
        k = FluxPosEmbed.ApplyRotaryEmb(k, cos, sin);
        // diffusers' native attention backend: [B, S, H, D] -> [B, H, S, D], SDPA, back
        var o = BatchInvariance.Run(new[] { q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2) }, Invariance,
                a => nn.functional.scaled_dot_product_attention(a[0], a[1], a[2], null, 0.0, false))
            .transpose(1, 2).flatten(2, 3).to(q.dtype);
        if (encoderHidden is null)
            return (o.MoveToOuterDisposeScope(), null);
        long ctx = encoderHidden.shape[1];
        var ctxOut = o.narrow(1, 0, ctx);
        var imgOut = o.narrow(1, ctx, o.shape[1] - ctx);
        foreach (var m in to_out!) imgOut = m.forward(imgOut.contiguous());
        var ctxProj = to_add_out!.forward(ctxOut.contiguous());
        return (imgOut.MoveToOuterDisposeScope(), ctxProj.MoveToOuterDisposeScope());
    }

    /// <summary>Per input shape: how the attention kernel gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("Attention");
}
