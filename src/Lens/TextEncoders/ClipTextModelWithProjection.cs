using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextModelWithProjection</c> (SDXL's text_encoder_2): keys <c>text_model.*</c> (a
/// <see cref="ClipTextModel"/>) and <c>text_projection.weight</c> (a bias-free Linear hidden_size -&gt; projection_dim).
/// Its <c>text_embeds</c> (<see cref="Pooled"/>) are text_projection(last_hidden_state at the end-of-text position).
/// Checkpoints whose keys lack the <c>text_model.</c> level are loaded too.
/// </summary>
internal sealed class ClipTextModelWithProjection : nn.Module<Tensor, Tensor>, ITextEncoder
{
    private readonly ClipTextModel text_model;
    private readonly Models.Linear text_projection;

    public ClipTextConfig Config => text_model.Config;
    /// <summary>projection_dim: the width of the pooled text embeddings.</summary>
    public int ProjectionDim { get; }
    /// <summary>eos_token_id of the config: 2 means transformers' legacy rule (the end-of-text position is the argmax of
    /// the ids); otherwise the first position holding this id.</summary>
    public long EosTokenId { get; }
    public int NumLayers => text_model.NumLayers;
    /// <summary>The text model inside (<c>text_model.*</c>).</summary>
    public ClipTextModel TextModel => text_model;

    public ClipTextModelWithProjection(ClipTextConfig config, int projectionDim, long eosTokenId, Device? device = null,
        ScalarType dtype = ScalarType.Float32) : base(nameof(ClipTextModelWithProjection))
    {
        if (projectionDim < 1) throw new LensException("CLIP text model with projection: projection_dim must be at least 1");
        ProjectionDim = projectionDim;
        EosTokenId = eosTokenId;
        text_model = new ClipTextModel(config, device, dtype);
        text_projection = TextEncoderParts.Linear(config.HiddenSize, projectionDim, bias: false, device, dtype);
        RegisterComponents();
        eval();
    }

    /// <summary>The module of a text_encoder_2 folder built from its config.json alone (CLIPTextConfig's defaults:
    /// projection_dim 512, eos_token_id 49407).</summary>
    public static ClipTextModelWithProjection Build(string dir, Device? device, ScalarType dtype)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        return new ClipTextModelWithProjection(ClipTextConfig.FromConfig(cfg), cfg.Int("projection_dim", 512),
            cfg.Has("eos_token_id") ? cfg.Long("eos_token_id") : 49407, device, dtype);
    }

    /// <summary>Reads config.json and the weights of a folder and loads them strictly.</summary>
    public static ClipTextModelWithProjection FromFolder(string dir, Device? device = null, ScalarType? dtype = null, string? variant = null)
    {
        var weights = WeightSet.FromFolder(dir, variant);
        var model = Build(dir, device, dtype ?? ScalarType.Float32);
        model.LoadWeights(weights);
        return model;
    }

    /// <summary>Strict load; a file key without the "text_model." level stands for the module key with it.</summary>
    public void LoadWeights(WeightSet weights, string component = "text_encoder_2") =>
        StrictLoader.Load(this, weights, component,
            ignoreUnexpected: k => k is "text_model.embeddings.position_ids" or "embeddings.position_ids",
            legacyKeyFor: k => k.StartsWith("text_model.", StringComparison.Ordinal) ? k["text_model.".Length..] : null);

    /// <summary>Every layer's output (see <see cref="ClipTextModel.Encode"/>).</summary>
    public ClipTextOutput Encode(Tensor inputIds, Tensor? attentionMask = null) => text_model.Encode(inputIds, attentionMask);

    TextEncoderOutput ITextEncoder.Encode(Tensor inputIds, Tensor? attentionMask) => Encode(inputIds, attentionMask);

    /// <summary>The final LayerNorm (<c>text_model.final_layer_norm</c>).</summary>
    public Tensor FinalLayerNorm(Tensor hidden) => text_model.FinalLayerNorm(hidden);

    /// <summary>
    /// transformers' <c>text_embeds</c>: text_projection(last_hidden_state[b, eos_b]) with eos_b = argmax(ids_b) when
    /// eos_token_id == 2 (the legacy configs, SDXL's included), else the first position of eos_token_id.
    /// [B, projection_dim].
    /// </summary>
    public Tensor Pooled(Tensor lastHiddenState, Tensor inputIds)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var pooled = ClipTextModel.PoolAtEos(lastHiddenState, inputIds, EosTokenId);
        return text_projection.forward(pooled).MoveToOuterDisposeScope();
    }

    /// <summary>last_hidden_state when the input of layer <paramref name="from"/> is <paramref name="hidden"/>.</summary>
    public Tensor LastHiddenStateFrom(int from, Tensor hidden) => text_model.LastHiddenStateFrom(from, hidden);

    /// <summary>The pooled text embeddings of <paramref name="inputIds"/>.</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var output = Encode(inputIds);
        return Pooled(output.LastHiddenState, inputIds);
    }
}
