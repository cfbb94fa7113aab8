using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>ApproximateGELU</c> (activation "geglu-approximate"): Linear (key <c>proj</c>) then x * sigmoid(1.702 x).</summary>
internal sealed class ApproximateGELU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public ApproximateGELU(int dimIn, int dimOut, bool bias = true) : base(nameof(ApproximateGELU))
    {
        proj = Layers.Linear(dimIn, dimOut, hasBias: bias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = proj.forward(x);
        return (h * torch.sigmoid(1.702 * h)).MoveToOuterDisposeScope();
    }
}
