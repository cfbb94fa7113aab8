using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// <c>torch.nn.RMSNorm</c> over the last dimension (key <c>weight</c> when elementwise_affine), computed as PyTorch's
/// composite <c>rms_norm</c>: the input upcast to float32 for half types, x * rsqrt(mean(x^2) + eps), cast back to the
/// input's dtype, then times the weight. Used by <see cref="FluxAttention"/> for its q/k norms. Kept batch-invariant
/// (<see cref="BatchInvariance"/>): CUDA's mean over the last dimension splits its sum by the number of rows.
/// </summary>
internal sealed class RMSNorm : nn.Module<Tensor, Tensor>, IBatchInvariant
{
    /// <summary>Per input shape: how this norm gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("RMSNorm");

#pragma warning disable IDE1006 // state-dict names
    public Parameter? weight;
#pragma warning restore IDE1006
    private readonly double _eps;

    public RMSNorm(long dim, double eps, bool elementwiseAffine = true) : base(nameof(RMSNorm))
    {
        _eps = eps;
        if (elementwiseAffine) weight = Layers.Parameter(new[] { dim }, () => torch.ones(dim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => BatchInvariance.Run(x, Invariance, Norm);

    private Tensor Norm(Tensor x)
    {
        using var scope = NewDisposeScope();
        var up = x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to(ScalarType.Float32) : x;
        var r = torch.rsqrt(up.pow(2).mean(new long[] { -1 }, keepdim: true).add_(_eps));
        var y = up.mul(r).to(x.dtype);
        if (weight is not null) y = y.mul(weight);
        return y.MoveToOuterDisposeScope();
    }
}
