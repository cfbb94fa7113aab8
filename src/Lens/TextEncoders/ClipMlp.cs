using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>transformers <c>CLIPMLP</c>: fc1 -&gt; ACT2FN[hidden_act] -&gt; fc2.</summary>
internal sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    private readonly Models.Linear fc1;
    private readonly Models.Linear fc2;
    private readonly Func<Tensor, Tensor> _act;

    public ClipMlp(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipMlp))
    {
        fc1 = TextEncoderParts.Linear(config.HiddenSize, config.IntermediateSize, true, device, dtype);
        fc2 = TextEncoderParts.Linear(config.IntermediateSize, config.HiddenSize, true, device, dtype);
        _act = TransformersActivations.Get(config.HiddenAct);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var h = fc1.forward(hiddenStates);
        h = _act(h);
        h = fc2.forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
