using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// torch.nn.Conv2d (keys weight [out, in, k, k], bias [out]; zero padding, no dilation or groups) computed by
/// <c>conv2d</c> exactly as PyTorch's module, kept batch-invariant inside a batch of layers
/// (<see cref="BatchInvariance"/>): cuDNN picks its algorithm by shape, and some pick another one for 24 rows than for
/// 2, which gives a row other numbers (<c>ci/batch_invariance.py</c>); such shapes then run in canonical calls, padded
/// (<c>ci/conv_canonical.py</c>).
/// </summary>
internal sealed class Conv2d : nn.Module<Tensor, Tensor>, IBatchInvariant
{
#pragma warning disable IDE1006 // state-dict names
    public Parameter weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    private readonly long[] _stride;
    private readonly long[] _padding;

    /// <summary>Per input shape: how this convolution gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("Conv2d");

    public long InChannels => weight.shape[1];
    public long OutChannels => weight.shape[0];

    public Conv2d(Parameter weight, Parameter? bias, long stride, long padding) : base(nameof(Conv2d))
    {
        if (weight.ndim != 4) throw new ArgumentException($"Conv2d weight must be [out, in, kH, kW], got [{string.Join(", ", weight.shape)}]");
        if (bias is not null && (bias.ndim != 1 || bias.shape[0] != weight.shape[0]))
            throw new ArgumentException($"Conv2d bias must be [{weight.shape[0]}], got [{string.Join(", ", bias.shape)}]");
        this.weight = weight;
        this.bias = bias;
        _stride = new[] { stride, stride };
        _padding = new[] { padding, padding };
        RegisterComponents();
    }

    private Tensor Conv(Tensor x) => nn.functional.conv2d(x, weight, bias, _stride, _padding);

    public override Tensor forward(Tensor input) => BatchInvariance.Run(input, Invariance, Conv);

    /// <summary>The convolution without its bias, for a fused kernel that adds <see cref="bias"/> later.</summary>
    public Tensor ForwardWithoutBias(Tensor input) =>
        BatchInvariance.Run(input, Invariance, x => nn.functional.conv2d(x, weight, null, _stride, _padding));
}
