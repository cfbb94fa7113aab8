using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FeedForward</c> (models/attention.py): keys net.0 (the activation module with its <c>proj</c>),
/// net.1 (Dropout), net.2 (Linear), and net.3 (Dropout) when final_dropout.
/// </summary>
internal sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(int dim, int? dimOut = null, int mult = 4, double dropout = 0.0, string activationFn = "geglu",
        bool finalDropout = false, int? innerDim = null, bool bias = true) : base(nameof(FeedForward))
    {
        int inner = innerDim ?? dim * mult;
        int outDim = dimOut ?? dim;
        nn.Module<Tensor, Tensor> act = activationFn switch
        {
            "gelu" => new GELU(dim, inner, bias: bias),
            "gelu-approximate" => new GELU(dim, inner, approximate: "tanh", bias: bias),
            "geglu" => new GEGLU(dim, inner, bias: bias),
            "geglu-approximate" => new ApproximateGELU(dim, inner, bias: bias),
            _ => throw new LensException($"unsupported feed-forward activation_fn '{activationFn}'"),
        };
        net = new ModuleList<nn.Module<Tensor, Tensor>>(act, nn.Dropout(dropout), Layers.Linear(inner, outDim, hasBias: bias));
        if (finalDropout) net.Add(nn.Dropout(dropout));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x;
        foreach (var m in net) h = TensorScopes.Then(h, m.forward(h), x); // each intermediate released once used
        return h.MoveToOuterDisposeScope();
    }
}
