using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>AttentionPooling</c> (models/embeddings.py, from DeepFloyd IF): a class token (mean over the sequence +
/// positional_embedding) attends over [class token, sequence] with num_heads heads; returns the class token's output
/// [B, embed_dim]. Keys positional_embedding [1, embed_dim], k_proj, q_proj, v_proj. q and k are each scaled by
/// dim_per_head^-1/4 before the product and the softmax runs in float32, as diffusers does. Under --batch-invariant
/// the whole pooling is one <see cref="BatchInvariance"/> op: its mean over the sequence (a reduction whose CUDA kernel
/// splits the sum by the number of outputs) and its batched products (cuBLAS picks kernels by the batch count) give a
/// row other numbers in another batch.
/// </summary>
internal sealed class AttentionPooling : nn.Module<Tensor, Tensor>, IBatchInvariant
{
    /// <summary>Per input shape: how the pooling gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("AttentionPooling");

    private readonly Parameter positional_embedding;
    private readonly Linear k_proj;
    private readonly Linear q_proj;
    private readonly Linear v_proj;

    public int NumHeads { get; }
    public int EmbedDim { get; }
    public int DimPerHead { get; }

    public AttentionPooling(int numHeads, int embedDim) : base(nameof(AttentionPooling))
    {
        if (numHeads <= 0) throw new LensException($"AttentionPooling: num_heads must be positive, got {numHeads}");
        NumHeads = numHeads;
        EmbedDim = embedDim;
        DimPerHead = embedDim / numHeads;
        positional_embedding = Layers.Parameter(new long[] { 1, embedDim }, () => torch.randn(1, embedDim) / Math.Sqrt(embedDim));
        k_proj = Layers.Linear(embedDim, embedDim);
        q_proj = Layers.Linear(embedDim, embedDim);
        v_proj = Layers.Linear(embedDim, embedDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => BatchInvariance.Run(x, Invariance, Pool);

    private Tensor Pool(Tensor x)
    {
        using var plain = BatchInvariance.Layers(0); // the projections inside are part of this one op
        using var scope = NewDisposeScope();
        long bs = x.shape[0];

        // (bs, length, width) -> (bs*n_heads, dim_per_head, length)
        Tensor Shape(Tensor t) => t.view(bs, -1, NumHeads, DimPerHead).transpose(1, 2)
            .reshape(bs * NumHeads, -1, DimPerHead).transpose(1, 2);

        var pos = positional_embedding.dtype == x.dtype ? positional_embedding : positional_embedding.to(x.dtype);
        var classToken = x.mean(new long[] { 1 }, keepdim: true) + pos;
        x = torch.cat(new[] { classToken, x }, 1);

        var q = Shape(q_proj.forward(classToken));
        var k = Shape(k_proj.forward(x));
        var v = Shape(v_proj.forward(x));

        double scale = 1 / Math.Sqrt(Math.Sqrt(DimPerHead));
        var weight = torch.einsum("bct,bcs->bts", q * scale, k * scale);
        weight = torch.softmax(weight.to(ScalarType.Float32), -1).to(weight.dtype);

        var a = torch.einsum("bts,bcs->bct", weight, v);
        a = a.reshape(bs, -1, 1).transpose(1, 2);
        return a.select(1, 0).MoveToOuterDisposeScope();
    }
}
