using DiffusionLens.Pipelines;
using static TorchSharp.torch;

namespace DiffusionLens.Sweep;

/// <summary>
/// How a sweep numbers what it renders (<c>--layer-numbering</c>). <see cref="Lens"/> (the default): layer L = 0..N-1
/// is the output of encoder layer/block L (transformers' <c>hidden_states[L + 1]</c>), N = num_hidden_layers (CLIP) /
/// num_layers (T5). <see cref="HiddenState"/>: index k = 0..N as transformers' <c>hidden_states[k]</c>, the paper's and
/// its annotations' numbering: k = 0 is the embedding output (the input of layer 0), k = L + 1 is lens layer L. Either
/// way the lens is the encoder's final layer norm applied to that tensor. (T5's own <c>hidden_states[N]</c> is already
/// final-normed; here hidden state N is lens layer N - 1, the norm applied once, i.e. <c>last_hidden_state</c>.)
/// </summary>
internal static class LayerNumbering
{
    public const string Lens = "lens";
    public const string HiddenState = "hidden-state";

    /// <summary>Throws a <see cref="LensException"/> unless <paramref name="numbering"/> is lens or hidden-state.</summary>
    public static string Check(string numbering) => numbering is Lens or HiddenState ? numbering
        : throw new LensException($"--layer-numbering must be {Lens} or {HiddenState} (got '{numbering}')");

    /// <summary>How many indices the numbering has for an encoder of <paramref name="numLayers"/> layers: N, or N + 1.</summary>
    public static int Count(string numbering, int numLayers) => Check(numbering) == Lens ? numLayers : numLayers + 1;

    /// <summary>The tensor index <paramref name="index"/> names, before the final norm.</summary>
    public static Tensor State(PromptLayers layers, string numbering, int index) =>
        Check(numbering) == Lens ? layers.Hidden[index]
        : index == 0 ? layers.Embeddings : layers.Hidden[index - 1];

    /// <summary>The file name stem of an index: layer-XX or hidden-KK.</summary>
    public static string FileStem(string numbering, int index) =>
        Check(numbering) == Lens ? $"layer-{index:D2}" : $"hidden-{index:D2}";

    /// <summary>The grid label of an index: "layer L" or "hidden state k".</summary>
    public static string Label(string numbering, int index) =>
        Check(numbering) == Lens ? $"layer {index}" : $"hidden state {index}";
}
