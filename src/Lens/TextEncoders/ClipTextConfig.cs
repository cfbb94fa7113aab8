using DiffusionLens.Loading;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// The fields of transformers' <c>CLIPTextConfig</c> the text model uses, read from <c>text_encoder/config.json</c>
/// with CLIPTextConfig's defaults for missing keys.
/// </summary>
internal sealed record ClipTextConfig(
    int VocabSize,
    int HiddenSize,
    int IntermediateSize,
    int NumHiddenLayers,
    int NumAttentionHeads,
    int MaxPositionEmbeddings,
    string HiddenAct,
    double LayerNormEps)
{
    public static ClipTextConfig FromConfig(DiffusersConfig c)
    {
        if (c.Has("text_config"))
            throw new LensException($"{c.Path}: this is a full CLIPConfig (it has 'text_config'); a CLIPTextModel config is expected");
        var cfg = new ClipTextConfig(
            VocabSize: c.Int("vocab_size", 49408),
            HiddenSize: c.Int("hidden_size", 512),
            IntermediateSize: c.Int("intermediate_size", 2048),
            NumHiddenLayers: c.Int("num_hidden_layers", 12),
            NumAttentionHeads: c.Int("num_attention_heads", 8),
            MaxPositionEmbeddings: c.Int("max_position_embeddings", 77),
            HiddenAct: c.Str("hidden_act", "quick_gelu"),
            LayerNormEps: c.Double("layer_norm_eps", 1e-5));
        if (cfg.HiddenSize % cfg.NumAttentionHeads != 0)
            throw new LensException($"{c.Path}: hidden_size {cfg.HiddenSize} is not divisible by num_attention_heads {cfg.NumAttentionHeads}");
        c.RequireSupported("hidden_act", TransformersActivations.Supported); // fails early, naming the file and field
        return cfg;
    }
}
