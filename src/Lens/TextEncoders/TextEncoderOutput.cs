using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// Every layer of a text encoder: <see cref="Hidden"/>[L] is the output of encoder layer/block L (0-based, before the
/// final norm; the embeddings are not included), <see cref="Embeddings"/> the embedding output (the input of layer 0,
/// transformers' <c>hidden_states[0]</c>), <see cref="LastHiddenState"/> = FinalLayerNorm(Hidden[^1]), i.e.
/// transformers' <c>last_hidden_state</c>. Disposing the output disposes all of its tensors.
/// </summary>
internal class TextEncoderOutput : IDisposable
{
    public IReadOnlyList<Tensor> Hidden { get; }
    /// <summary>The embedding output, the input of encoder layer 0 (CLIP: token + position embeddings; T5: the
    /// embedded tokens, dropout being a no-op in eval).</summary>
    public Tensor Embeddings { get; }
    public Tensor LastHiddenState { get; }

    public TextEncoderOutput(Tensor embeddings, IReadOnlyList<Tensor> hidden, Tensor lastHiddenState)
    {
        Embeddings = embeddings;
        Hidden = hidden;
        LastHiddenState = lastHiddenState;
    }

    public void Dispose()
    {
        Embeddings.Dispose();
        foreach (var h in Hidden) h.Dispose();
        LastHiddenState.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>Output of <see cref="ClipTextModel.Encode"/>.</summary>
internal sealed class ClipTextOutput : TextEncoderOutput
{
    public ClipTextOutput(Tensor embeddings, IReadOnlyList<Tensor> hidden, Tensor lastHiddenState) : base(embeddings, hidden, lastHiddenState) { }
}

/// <summary>Output of <see cref="T5EncoderModel.Encode"/>.</summary>
internal sealed class T5EncoderOutput : TextEncoderOutput
{
    public T5EncoderOutput(Tensor embeddings, IReadOnlyList<Tensor> hidden, Tensor lastHiddenState) : base(embeddings, hidden, lastHiddenState) { }
}

/// <summary>What the lens needs from a text encoder: the embedding output, every layer's output and the final norm to
/// apply to any of them.</summary>
internal interface ITextEncoder
{
    int NumLayers { get; }
    TextEncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null);
    Tensor FinalLayerNorm(Tensor hidden);
}
