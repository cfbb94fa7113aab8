using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers <c>GELU</c> (models/activations.py): Linear (key <c>proj</c>) then GELU, exact or tanh-approximate.</summary>
internal sealed class GELU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;
    private readonly bool _tanh;

    /// <param name="approximate">"none" or "tanh"</param>
    public GELU(int dimIn, int dimOut, string approximate = "none", bool bias = true) : base(nameof(GELU))
    {
        _tanh = approximate switch
        {
            "none" => false,
            "tanh" => true,
            _ => throw new LensException($"unsupported GELU approximation '{approximate}'"),
        };
        proj = Layers.Linear(dimIn, dimOut, hasBias: bias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = proj.forward(x);
        return _tanh ? nn.functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh) : nn.functional.gelu(h);
    }
}
