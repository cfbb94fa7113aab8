using DiffusionLens.Loading;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextModel</c> (its <c>CLIPTextTransformer</c>; module keys without the "text_model." prefix):
/// embeddings -&gt; encoder layers with causal self-attention -&gt; final_layer_norm.
/// <see cref="Encode"/> returns the embedding output and every encoder layer's output so any of them can be pushed through
/// <see cref="FinalLayerNorm"/> (the Diffusion Lens). The pooled output (FLUX uses it) is <see cref="PoolAtEos"/> of the
/// last hidden state.
/// </summary>
internal sealed class ClipTextModel : nn.Module<Tensor, Tensor>, ITextEncoder
{
    private readonly ClipTextEmbeddings embeddings;
    private readonly ClipEncoder encoder;
    private readonly LayerNorm final_layer_norm;

    public ClipTextConfig Config { get; }
    public int NumLayers => Config.NumHiddenLayers;

    /// <summary>Builds the module with zero-filled parameters on <paramref name="device"/>/<paramref name="dtype"/>; load weights with <see cref="StrictLoader"/>.</summary>
    public ClipTextModel(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipTextModel))
    {
        if (config.NumHiddenLayers < 1) throw new LensException("CLIP text model: num_hidden_layers must be at least 1");
        Config = config;
        embeddings = new ClipTextEmbeddings(config, device, dtype);
        encoder = new ClipEncoder(config, device, dtype);
        final_layer_norm = TextEncoderParts.LayerNorm(config.HiddenSize, config.LayerNormEps, device, dtype);
        RegisterComponents();
        eval();
    }

    /// <summary>
    /// Reads <c>config.json</c> and the safetensors weights of a text_encoder folder and loads them strictly. Checkpoints
    /// saved by transformers 4 carry keys "text_model.embeddings..."; transformers 5 saves them without the prefix —
    /// the prefix is detected from the keys. The legacy "embeddings.position_ids" buffer is ignored if present.
    /// </summary>
    public static ClipTextModel FromFolder(string textEncoderDir, Device? device = null, ScalarType? dtype = null, string? variant = null)
    {
        var weights = WeightSet.FromFolder(textEncoderDir, variant);
        var model = Build(textEncoderDir, device, dtype ?? ScalarType.Float32);
        model.LoadWeights(weights);
        return model;
    }

    /// <summary>The module of a text_encoder folder built from its config.json alone (no weights read).</summary>
    public static ClipTextModel Build(string textEncoderDir, Device? device, ScalarType dtype) =>
        new(ClipTextConfig.FromConfig(DiffusersConfig.Load(Path.Combine(textEncoderDir, "config.json"))), device, dtype);

    /// <summary>Strict load with "text_model." prefix detection.</summary>
    public void LoadWeights(WeightSet weights)
    {
        const string probe = "embeddings.token_embedding.weight";
        string prefix = weights.Contains("text_model." + probe) ? "text_model." : "";
        StrictLoader.Load(this, weights, "text_encoder", prefix,
            ignoreUnexpected: k => k == prefix + "embeddings.position_ids");
    }

    /// <summary>
    /// Runs the model. <paramref name="inputIds"/>: (batch, seq) int64. <paramref name="attentionMask"/> (optional,
    /// (batch, seq), 1 = token, 0 = padding) is combined with the causal mask as transformers' sdpa mask builder does:
    /// a mask without zeros is dropped (pure causal attention); otherwise a boolean causal-and-padding mask is used.
    /// </summary>
    public ClipTextOutput Encode(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var ids = inputIds.reshape(-1, inputIds.shape[^1]);
        var h = embeddings.forward(ids);
        var mask = BuildMask(attentionMask, ids.shape[0], ids.shape[1], h.device);
        var hidden = encoder.ForwardAllLayers(h, mask);
        var last = final_layer_norm.forward(hidden[^1]);
        return new ClipTextOutput(h.MoveToOuterDisposeScope(), TextEncoderParts.MoveAllToOuter(hidden), last.MoveToOuterDisposeScope());
    }

    TextEncoderOutput ITextEncoder.Encode(Tensor inputIds, Tensor? attentionMask) => Encode(inputIds, attentionMask);

    /// <summary>The model's final LayerNorm, applicable to any layer's output.</summary>
    public Tensor FinalLayerNorm(Tensor hidden)
    {
        using var noGrad = torch.no_grad();
        return final_layer_norm.forward(hidden);
    }

    /// <summary>transformers' last_hidden_state when the input of layer <paramref name="from"/> is
    /// <paramref name="hidden"/>: layers from..last (causal attention, no padding mask), then final_layer_norm.</summary>
    public Tensor LastHiddenStateFrom(int from, Tensor hidden)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var h = encoder.ForwardFrom(from, hidden, null);
        return final_layer_norm.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// transformers' <c>pooler_output</c> rule: last_hidden_state[b, eos_b] with eos_b = argmax(ids_b) when
    /// <paramref name="eosTokenId"/> == 2 (the legacy configs), else the first position of eos_token_id. [B, D].
    /// </summary>
    public static Tensor PoolAtEos(Tensor lastHiddenState, Tensor inputIds, long eosTokenId)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var ids = inputIds.reshape(-1, inputIds.shape[^1]).to(ScalarType.Int64).to(lastHiddenState.device);
        var eos = eosTokenId == 2 ? ids.argmax(-1) : (ids == eosTokenId).to(ScalarType.Int32).argmax(-1);
        var rows = torch.arange(ids.shape[0], dtype: ScalarType.Int64, device: lastHiddenState.device);
        return lastHiddenState.index(new TensorIndex[] { TensorIndex.Tensor(rows), TensorIndex.Tensor(eos) }).MoveToOuterDisposeScope();
    }

    /// <summary>last_hidden_state for <paramref name="inputIds"/> (no padding mask).</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var output = Encode(inputIds);
        return output.LastHiddenState.alias();
    }

    private static Tensor? BuildMask(Tensor? attentionMask, long batch, long seq, Device device)
    {
        if (attentionMask is null) return null;
        var pad = attentionMask.to(device).view(-1, attentionMask.shape[^1]);
        if (pad.shape[0] != batch || pad.shape[1] != seq)
            throw new LensException($"attention mask shape [{string.Join(",", attentionMask.shape)}] does not match input ids [{batch},{seq}]");
        var padBool = pad.to(ScalarType.Bool);
        if (padBool.all().item<bool>()) return null; // transformers skips the mask: SDPA runs with is_causal
        var idx = torch.arange(seq, dtype: ScalarType.Int64, device: device);
        var causal = idx.unsqueeze(0) <= idx.unsqueeze(1); // [q, kv]: kv <= q
        return causal.unsqueeze(0).unsqueeze(0) & padBool.unsqueeze(1).unsqueeze(1); // (b, 1, q, kv)
    }
}
