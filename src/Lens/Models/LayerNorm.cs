using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// torch.nn.LayerNorm over the last dimension (keys weight, bias when elementwise_affine) computed by
/// <c>layer_norm</c> as PyTorch's module, kept batch-invariant inside a batch of several layers like
/// <see cref="Conv2d"/> (<see cref="BatchInvariance"/>).
/// </summary>
internal sealed class LayerNorm : nn.Module<Tensor, Tensor>, IBatchInvariant
{
#pragma warning disable IDE1006 // state-dict names
    public Parameter? weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    private readonly long[] _shape;
    public double Eps { get; }

    /// <summary>Per input shape: how this norm gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("LayerNorm");

    public LayerNorm(long dim, double eps, Parameter? weight, Parameter? bias) : base(nameof(LayerNorm))
    {
        _shape = new[] { dim };
        Eps = eps;
        this.weight = weight;
        this.bias = bias;
        RegisterComponents();
    }

    private Tensor Norm(Tensor x) => nn.functional.layer_norm(x, _shape, weight, bias, Eps);

    public override Tensor forward(Tensor input) => BatchInvariance.Run(input, Invariance, Norm);
}
