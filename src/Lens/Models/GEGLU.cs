using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>GEGLU</c>: Linear (key <c>proj</c>, output 2*dim_out), split into (hidden, gate) along the last dim,
/// result <c>hidden * gelu(gate)</c> (exact GELU).
/// </summary>
internal sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public GEGLU(int dimIn, int dimOut, bool bias = true) : base(nameof(GEGLU))
    {
        proj = Layers.Linear(dimIn, dimOut * 2, hasBias: bias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = proj.forward(x);
        var parts = h.chunk(2, -1);
        var hidden = parts[0];
        var gate = parts[1];
        // hidden * gelu(gate), written into gelu's output (a * b == b * a exactly): one [.., dim_out] buffer fewer
        return nn.functional.gelu(gate).mul_(hidden).MoveToOuterDisposeScope();
    }
}
