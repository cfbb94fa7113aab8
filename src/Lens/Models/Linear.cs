using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// torch.nn.Linear (keys weight [out, in], bias [out]) computed as PyTorch's <c>at::linear</c> computes it: with a bias,
/// a 2-D input or a contiguous N-D input flattened to 2-D goes through ONE <c>addmm</c>, which cuBLAS runs as a GEMM
/// with the bias added in its epilogue; otherwise matmul then an in-place bias add. TorchSharp's own Linear runs the
/// older C++ frontend rule (addmm for 2-D input only), so every [B, L, C] projection with a bias paid for a separate
/// broadcast add kernel and a GEMM without the fused bias: on an H200 at 24 rows of SD 1.5 about 8 ms a step, and
/// numbers that differ from what diffusers computes (the epilogue adds the bias before rounding to half precision).
/// </summary>
internal sealed class Linear : nn.Module<Tensor, Tensor>, IBatchInvariant
{
#pragma warning disable IDE1006 // state-dict names
    public Parameter weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];

    public Linear(Parameter weight, Parameter? bias) : base(nameof(Linear))
    {
        if (weight.ndim != 2) throw new ArgumentException($"Linear weight must be [out, in], got [{string.Join(", ", weight.shape)}]");
        if (bias is not null && (bias.ndim != 1 || bias.shape[0] != weight.shape[0]))
            throw new ArgumentException($"Linear bias must be [{weight.shape[0]}], got [{string.Join(", ", bias.shape)}]");
        this.weight = weight;
        this.bias = bias;
        RegisterComponents();
    }

    /// <summary>Per input shape: how this projection gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("Linear");

    public override Tensor forward(Tensor input) => BatchInvariance.Run(input, Invariance, Compute);

    private Tensor Compute(Tensor input) => Apply(input, weight, bias);

    /// <summary>
    /// <c>at::linear(input, weight, bias)</c> as PyTorch computes it (see the class summary), for this module's
    /// parameters or views of them (GEGLU's two halves).
    /// </summary>
    internal static Tensor Apply(Tensor input, Tensor weight, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var wt = weight.t();
        Tensor output;
        if (bias is not null && input.ndim == 2)
            output = torch.addmm(bias, input, wt, 1, 1);
        else if (bias is not null && input.ndim > 2 && input.is_contiguous())
        {
            var shape = input.shape;
            long rows = 1;
            for (int i = 0; i < shape.Length - 1; i++) rows *= shape[i];
            var flat = torch.addmm(bias, input.reshape(rows, shape[^1]), wt, 1, 1);
            var outShape = shape.ToArray();
            outShape[^1] = flat.shape[1];
            output = flat.view(outShape);
        }
        else
        {
            output = input.matmul(wt);
            if (bias is not null) output.add_(bias);
        }
        return output.MoveToOuterDisposeScope();
    }
}
