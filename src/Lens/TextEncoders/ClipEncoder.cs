using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>transformers <c>CLIPEncoder</c>: the stack of <see cref="ClipEncoderLayer"/>s (keys "layers.N. ...").</summary>
internal sealed class ClipEncoder : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipEncoder))
    {
        layers = new ModuleList<ClipEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new ClipEncoderLayer(config, device, dtype));
        RegisterComponents();
    }

    public int Count => layers.Count;

    /// <summary>The output of every layer, in order (index L = output of layer L).</summary>
    public List<Tensor> ForwardAllLayers(Tensor inputsEmbeds, Tensor? attnMask)
    {
        var outputs = new List<Tensor>(layers.Count);
        var h = inputsEmbeds;
        foreach (var layer in layers)
        {
            h = layer.forward(h, attnMask);
            outputs.Add(h);
        }
        return outputs;
    }

    public override Tensor forward(Tensor inputsEmbeds, Tensor? attnMask)
    {
        using var scope = NewDisposeScope();
        var all = ForwardAllLayers(inputsEmbeds, attnMask);
        return all[^1].MoveToOuterDisposeScope();
    }
}
