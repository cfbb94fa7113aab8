using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5LayerNorm</c> (RMS norm, no mean, no bias): variance = x.to(float32).pow(2).mean(-1, keepdim);
/// x = x * rsqrt(variance + eps); cast to the weight's dtype if that is float16/bfloat16; weight * x.
/// </summary>
internal sealed class T5LayerNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double _eps;

    public T5LayerNorm(long hiddenSize, double eps = 1e-6, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(T5LayerNorm))
    {
        weight = new Parameter(torch.ones(new[] { hiddenSize }, dtype: dtype, device: device), requires_grad: false);
        _eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var variance = hiddenStates.to(ScalarType.Float32).pow(2).mean(new long[] { -1 }, keepdim: true);
        var h = hiddenStates * torch.rsqrt(variance + _eps);
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16) h = h.to(weight.dtype);
        return (weight * h).MoveToOuterDisposeScope();
    }
}
