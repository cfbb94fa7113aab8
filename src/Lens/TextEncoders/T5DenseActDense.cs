using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5DenseActDense</c> (original T5, non-gated): wo(act(wi(x))), the activations cast to wo's dtype
/// when they differ (wo is kept in float32 when the model is loaded in float16, as transformers'
/// <c>_keep_in_fp32_modules = ["wo"]</c> does).
/// </summary>
internal sealed class T5DenseActDense : nn.Module<Tensor, Tensor>
{
    private readonly Models.Linear wi;
    private readonly Models.Linear wo;
    private readonly Func<Tensor, Tensor> _act;

    public T5DenseActDense(T5Config config, Device? device = null, ScalarType dtype = ScalarType.Float32, ScalarType? woDtype = null)
        : base(nameof(T5DenseActDense))
    {
        wi = TextEncoderParts.Linear(config.DModel, config.DFf, false, device, dtype);
        wo = TextEncoderParts.Linear(config.DFf, config.DModel, false, device, woDtype ?? dtype);
        _act = TransformersActivations.Get(config.DenseActFn);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var h = wi.forward(hiddenStates);
        h = _act(h);
        var woDtype = wo.weight!.dtype;
        if (h.dtype != woDtype && woDtype != ScalarType.Int8) h = h.to(woDtype);
        return wo.forward(h).MoveToOuterDisposeScope();
    }
}
