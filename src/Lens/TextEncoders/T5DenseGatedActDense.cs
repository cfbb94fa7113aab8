using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5DenseGatedActDense</c> (T5 v1.1, "gated-gelu"): wo(act(wi_0(x)) * wi_1(x)), the product cast to
/// wo's dtype when they differ (wo stays float32 in a float16 model, as transformers' <c>_keep_in_fp32_modules</c>).
/// </summary>
internal sealed class T5DenseGatedActDense : nn.Module<Tensor, Tensor>
{
    private readonly Models.Linear wi_0;
    private readonly Models.Linear wi_1;
    private readonly Models.Linear wo;
    private readonly Func<Tensor, Tensor> _act;

    public T5DenseGatedActDense(T5Config config, Device? device = null, ScalarType dtype = ScalarType.Float32, ScalarType? woDtype = null)
        : base(nameof(T5DenseGatedActDense))
    {
        wi_0 = TextEncoderParts.Linear(config.DModel, config.DFf, false, device, dtype);
        wi_1 = TextEncoderParts.Linear(config.DModel, config.DFf, false, device, dtype);
        wo = TextEncoderParts.Linear(config.DFf, config.DModel, false, device, woDtype ?? dtype);
        _act = TransformersActivations.Get(config.DenseActFn);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var hiddenGelu = _act(wi_0.forward(hiddenStates));
        var hiddenLinear = wi_1.forward(hiddenStates);
        var h = hiddenGelu * hiddenLinear;
        var woDtype = wo.weight!.dtype;
        if (h.dtype != woDtype && woDtype != ScalarType.Int8) h = h.to(woDtype);
        return wo.forward(h).MoveToOuterDisposeScope();
    }
}
