using DiffusionLens.Loading;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5EncoderModel</c>: shared embedding -&gt; T5 blocks -&gt; encoder.final_layer_norm.
/// <see cref="Encode"/> returns the embedding output and every block's output so any of them can be pushed through <see cref="FinalLayerNorm"/>.
/// The input embedding is tied: checkpoints store "shared.weight", "encoder.embed_tokens.weight" or both. The encoder
/// reads encoder.embed_tokens whenever the file has it: a transformers model untied by tie_word_embeddings=false
/// (newer T5Stack owns its embed_tokens) uses it, and an older, tied one loads shared.weight and then
/// encoder.embed_tokens.weight into the same parameter, so the latter wins there too. The other key is then ignored.
/// In float16, the FF output projections ("wo") are kept in float32 as transformers' <c>_keep_in_fp32_modules = ["wo"]</c>
/// does when loading with torch_dtype=float16; the residual stream then becomes float32 after the first FF, exactly as
/// in transformers. (Calling <c>.to(float16)</c> on a loaded model would undo that.)
/// </summary>
internal sealed class T5EncoderModel : nn.Module<Tensor, Tensor>, ITextEncoder
{
    private readonly Embedding? shared;
    private readonly T5Stack encoder;

    public T5Config Config { get; }
    public int NumLayers => Config.NumLayers;

    /// <param name="embeddingKey">"shared" (module key "shared.weight") or "encoder.embed_tokens" (see <see cref="EmbeddingKeyFor"/>)</param>
    /// <param name="woDtype">dtype of the FF output projections; null = <paramref name="dtype"/> (FromFolder passes float32 for a float16 model)</param>
    public T5EncoderModel(T5Config config, Device? device = null, ScalarType dtype = ScalarType.Float32,
        string embeddingKey = "shared", ScalarType? woDtype = null)
        : base(nameof(T5EncoderModel))
    {
        Config = config;
        bool ownInStack = embeddingKey switch
        {
            "shared" => false,
            "encoder.embed_tokens" => true,
            _ => throw new ArgumentException($"embeddingKey must be 'shared' or 'encoder.embed_tokens', not '{embeddingKey}'"),
        };
        if (!ownInStack) shared = TextEncoderParts.Embedding(config.VocabSize, config.DModel, device, dtype);
        encoder = new T5Stack(config, ownInStack, device, dtype, woDtype);
        if (shared is not null) encoder.SetSharedEmbedding(shared);
        RegisterComponents();
        eval();
    }

    /// <summary>
    /// Reads <c>config.json</c> and the (possibly sharded) safetensors weights of a text_encoder folder and loads them
    /// strictly, tensor by tensor, into a model built directly in <paramref name="dtype"/> (default float32).
    /// Keys containing "decoder" are ignored (transformers' <c>_keys_to_ignore_on_load_unexpected</c> for T5EncoderModel).
    /// </summary>
    public static T5EncoderModel FromFolder(string textEncoderDir, Device? device = null, ScalarType? dtype = null, string? variant = null)
    {
        var weights = WeightSet.FromFolder(textEncoderDir, variant);
        var model = Build(textEncoderDir, device, dtype ?? ScalarType.Float32, EmbeddingKeyFor(weights));
        model.LoadWeights(weights);
        return model;
    }

    /// <summary>
    /// The module of a text_encoder folder built from its config.json alone (no weights read); in float16 the FF output
    /// projections are float32 (transformers' <c>_keep_in_fp32_modules</c>).
    /// </summary>
    public static T5EncoderModel Build(string textEncoderDir, Device? device, ScalarType dtype, string embeddingKey = "shared")
    {
        var config = T5Config.FromConfig(DiffusersConfig.Load(Path.Combine(textEncoderDir, "config.json")));
        ScalarType? woDtype = dtype == ScalarType.Float16 ? ScalarType.Float32 : null;
        return new T5EncoderModel(config, device, dtype, embeddingKey, woDtype);
    }

    /// <summary>The embedding the encoder reads from a weight set: "encoder.embed_tokens" when stored, else "shared".</summary>
    public static string EmbeddingKeyFor(WeightSet weights) =>
        weights.Contains("encoder.embed_tokens.weight") ? "encoder.embed_tokens" : "shared";

    public void LoadWeights(WeightSet weights)
    {
        string otherKey = shared is not null ? "encoder.embed_tokens.weight" : "shared.weight";
        StrictLoader.Load(this, weights, "text_encoder", "",
            ignoreUnexpected: k => k.Contains("decoder") || k == otherKey);
    }

    /// <summary>
    /// Runs the encoder. <paramref name="inputIds"/>: (batch, seq) int64; <paramref name="attentionMask"/>: (batch, seq),
    /// 1 = token, 0 = padding (null = all ones, as transformers).
    /// </summary>
    public T5EncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var hidden = encoder.ForwardAllLayers(inputIds, attentionMask, out var embeddings);
        var last = encoder.FinalLayerNorm(hidden[^1]);
        return new T5EncoderOutput(embeddings.MoveToOuterDisposeScope(), TextEncoderParts.MoveAllToOuter(hidden), last.MoveToOuterDisposeScope());
    }

    TextEncoderOutput ITextEncoder.Encode(Tensor inputIds, Tensor? attentionMask) => Encode(inputIds, attentionMask);

    /// <summary>encoder.final_layer_norm (T5 RMS norm), applicable to any block's output.</summary>
    public Tensor FinalLayerNorm(Tensor hidden)
    {
        using var noGrad = torch.no_grad();
        return encoder.FinalLayerNorm(hidden);
    }

    /// <summary>last_hidden_state for <paramref name="inputIds"/> without a padding mask.</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var output = Encode(inputIds);
        return output.LastHiddenState.alias();
    }
}
