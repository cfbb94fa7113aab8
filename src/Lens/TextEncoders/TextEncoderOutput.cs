using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// Every layer of a text encoder: <see cref="Hidden"/>[L] is the output of encoder layer/block L (0-based, before the
/// final norm; the embeddings are not included), <see cref="LastHiddenState"/> = FinalLayerNorm(Hidden[^1]), i.e.
/// transformers' <c>last_hidden_state</c>. Disposing the output disposes all of its tensors.
/// </summary>
internal class TextEncoderOutput : IDisposable
{
    public IReadOnlyList<Tensor> Hidden { get; }
    public Tensor LastHiddenState { get; }

    public TextEncoderOutput(IReadOnlyList<Tensor> hidden, Tensor lastHiddenState)
    {
        Hidden = hidden;
        LastHiddenState = lastHiddenState;
    }

    public void Dispose()
    {
        foreach (var h in Hidden) h.Dispose();
        LastHiddenState.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>Output of <see cref="ClipTextModel.Encode"/>.</summary>
internal sealed class ClipTextOutput : TextEncoderOutput
{
    public ClipTextOutput(IReadOnlyList<Tensor> hidden, Tensor lastHiddenState) : base(hidden, lastHiddenState) { }
}

/// <summary>Output of <see cref="T5EncoderModel.Encode"/>.</summary>
internal sealed class T5EncoderOutput : TextEncoderOutput
{
    public T5EncoderOutput(IReadOnlyList<Tensor> hidden, Tensor lastHiddenState) : base(hidden, lastHiddenState) { }
}

/// <summary>What the lens needs from a text encoder: every layer's output and the final norm to apply to any of them.</summary>
internal interface ITextEncoder
{
    int NumLayers { get; }
    TextEncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null);
    Tensor FinalLayerNorm(Tensor hidden);
}
