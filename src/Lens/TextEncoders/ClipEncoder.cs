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

    /// <summary>The output of layers <paramref name="from"/>..last run on <paramref name="hidden"/> (the input of layer
    /// <paramref name="from"/>).</summary>
    public Tensor ForwardFrom(int from, Tensor hidden, Tensor? attnMask)
    {
        if (from < 0 || from > layers.Count) throw new ArgumentOutOfRangeException(nameof(from));
        using var scope = NewDisposeScope();
        var h = hidden.alias();
        for (int i = from; i < layers.Count; i++) h = layers[i].forward(h, attnMask);
        return h.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor inputsEmbeds, Tensor? attnMask)
    {
        using var scope = NewDisposeScope();
        var all = ForwardAllLayers(inputsEmbeds, attnMask);
        return all[^1].MoveToOuterDisposeScope();
    }
}
