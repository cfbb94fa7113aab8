using DiffusionLens.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// torch.nn.GroupNorm (keys weight, bias when affine) computed by <c>group_norm</c> as PyTorch's module, kept
/// batch-invariant inside a batch of several layers like <see cref="Conv2d"/>: libtorch's CPU kernel splits its
/// reductions by the number of (row, group) pairs, so at some shapes a row's numbers depend on the rows beside it.
/// On CUDA in 16-bit types it runs <see cref="FusedKernels.GroupNorm"/> instead (batch-invariant by construction).
/// </summary>
internal sealed class GroupNorm : nn.Module<Tensor, Tensor>, IBatchInvariant
{
#pragma warning disable IDE1006 // state-dict names
    public Parameter? weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    public long NumGroups { get; }
    public long NumChannels { get; }
    public double Eps { get; }

    /// <summary>Per input shape: how this norm gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("GroupNorm");

    public GroupNorm(long numGroups, long numChannels, double eps, Parameter? weight, Parameter? bias) : base(nameof(GroupNorm))
    {
        if (numGroups < 1 || numChannels % numGroups != 0)
            throw new ArgumentException($"GroupNorm: {numChannels} channels do not split into {numGroups} groups");
        NumGroups = numGroups;
        NumChannels = numChannels;
        Eps = eps;
        this.weight = weight;
        this.bias = bias;
        RegisterComponents();
    }

    private Tensor Norm(Tensor x) => nn.functional.group_norm(x, NumGroups, weight, bias, Eps);

    public override Tensor forward(Tensor input) => FusedKernels.Applies(input)
        ? FusedKernels.GroupNorm(input, NumGroups, weight, bias, Eps)
        : BatchInvariance.Run(input, Invariance, Norm);

}
