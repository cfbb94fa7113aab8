using DiffusionLens.Loading;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// The fields of transformers' <c>T5Config</c> the encoder uses, with T5Config's defaults. As in T5Config.__init__,
/// <c>feed_forward_proj</c> ("relu", "gated-gelu", "gated-silu", ...) gives the activation and whether the FF is gated
/// ("gated-gelu" means gelu_new for backward compatibility); explicit <c>dense_act_fn</c> / <c>is_gated_act</c> keys in the
/// file win, because PretrainedConfig sets the remaining kwargs after T5Config computed them.
/// </summary>
internal sealed record T5Config(
    int VocabSize,
    int DModel,
    int DKv,
    int DFf,
    int NumLayers,
    int NumHeads,
    int RelativeAttentionNumBuckets,
    int RelativeAttentionMaxDistance,
    double LayerNormEpsilon,
    string DenseActFn,
    bool IsGatedAct)
{
    public int InnerDim => NumHeads * DKv;

    public static T5Config FromConfig(DiffusersConfig c)
    {
        var ffProj = c.Str("feed_forward_proj", "relu");
        var actInfo = ffProj.Split('-');
        if ((actInfo.Length > 1 && actInfo[0] != "gated") || actInfo.Length > 2)
            throw new LensException($"{c.Path}: 'feed_forward_proj' = {ffProj} is not a valid activation (expected 'gated-{{ACT_FN}}' or '{{ACT_FN}}')");
        string act = actInfo[^1];
        bool gated = actInfo[0] == "gated";
        if (ffProj == "gated-gelu") act = "gelu_new";
        act = c.Str("dense_act_fn", act);
        gated = c.Bool("is_gated_act", gated);
        if (c.Bool("is_decoder", false))
            throw new LensException($"{c.Path}: 'is_decoder' = true is not supported (a T5 encoder is expected)");
        var cfg = new T5Config(
            VocabSize: c.Int("vocab_size", 32128),
            DModel: c.Int("d_model", 512),
            DKv: c.Int("d_kv", 64),
            DFf: c.Int("d_ff", 2048),
            NumLayers: c.Int("num_layers", 6),
            NumHeads: c.Int("num_heads", 8),
            RelativeAttentionNumBuckets: c.Int("relative_attention_num_buckets", 32),
            RelativeAttentionMaxDistance: c.Int("relative_attention_max_distance", 128),
            LayerNormEpsilon: c.Double("layer_norm_epsilon", 1e-6),
            DenseActFn: act,
            IsGatedAct: gated);
        if (cfg.NumLayers < 1) throw new LensException($"{c.Path}: num_layers must be at least 1");
        // fails early on an unsupported activation, naming the file and the field it came from
        if (!TransformersActivations.Supported.Contains(cfg.DenseActFn))
        {
            var (field, value) = c.Has("dense_act_fn") ? ("dense_act_fn", cfg.DenseActFn) : ("feed_forward_proj", ffProj);
            throw new LensException($"{c.Path}: '{field}' = {value} is not supported (activation '{cfg.DenseActFn}'; supported: {string.Join(", ", TransformersActivations.Supported)})");
        }
        return cfg;
    }
}
