using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>GEGLU</c>: Linear (key <c>proj</c>, output 2*dim_out), split into (hidden, gate) along the last dim,
/// result <c>hidden * gelu(gate)</c> (exact GELU).
/// </summary>
/// <remarks>
/// The two halves are two GEMMs on the two halves of <c>proj</c>'s rows (views, no copies) instead of one GEMM and a
/// chunk: the same products, but each half comes out contiguous, so GELU and the product run as vectorised element-wise
/// kernels, in place, instead of strided ones over views of a 2*dim_out tensor (diffusers' chunk): on an H200 the
/// strided kernels were the largest element-wise cost of SD 1.5's step at 24 rows.
/// </remarks>
internal sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public GEGLU(int dimIn, int dimOut, bool bias = true) : base(nameof(GEGLU))
    {
        proj = Layers.Linear(dimIn, dimOut * 2, hasBias: bias);
        RegisterComponents();
    }

    // row-wise, so it may run per layer's rows inside a batch of several layers (BatchInvariance)
    public override Tensor forward(Tensor x) => BatchInvariance.Run(x, proj.Invariance, Compute);

    private Tensor Compute(Tensor x)
    {
        using var scope = NewDisposeScope();
        long d = proj.OutFeatures / 2;
        var hidden = Linear.Apply(x, proj.weight.narrow(0, 0, d), proj.bias?.narrow(0, 0, d));
        var gate = Linear.Apply(x, proj.weight.narrow(0, d, d), proj.bias?.narrow(0, d, d));
        // hidden * gelu(gate), written into gate's buffer (a * b == b * a exactly)
        return gate.gelu_().mul_(hidden).MoveToOuterDisposeScope();
    }
}
