using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5Stack</c> as the encoder: embed_tokens (shared with the model's "shared" embedding; registered here
/// only when a checkpoint stores it as "encoder.embed_tokens.weight" alone), blocks ("block.N"), final_layer_norm.
/// The position bias (relative bias of block 0 plus the additive mask (1 - mask) * finfo(dtype).min) is computed once
/// and shared by all blocks.
/// </summary>
internal sealed class T5Stack : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly Embedding? embed_tokens;
    private readonly ModuleList<T5Block> block;
    private readonly T5LayerNorm final_layer_norm;

    private Embedding? _sharedEmbedding;

    public T5Stack(T5Config config, bool ownEmbedTokens, Device? device = null, ScalarType dtype = ScalarType.Float32, ScalarType? woDtype = null)
        : base(nameof(T5Stack))
    {
        if (ownEmbedTokens) embed_tokens = TextEncoderParts.Embedding(config.VocabSize, config.DModel, device, dtype);
        block = new ModuleList<T5Block>();
        for (int i = 0; i < config.NumLayers; i++) block.Add(new T5Block(config, hasRelativeAttentionBias: i == 0, device, dtype, woDtype));
        final_layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    /// <summary>The input embedding when it is owned by the parent model (key "shared.weight").</summary>
    internal void SetSharedEmbedding(Embedding shared) => _sharedEmbedding = shared;

    public int Count => block.Count;
    public T5LayerNorm FinalLayerNormModule => final_layer_norm;

    private Embedding EmbedTokens => embed_tokens ?? _sharedEmbedding ?? throw new InvalidOperationException("T5Stack has no input embedding");

    /// <summary>Every block's output, in order (index L = output of block L, before the final norm).</summary>
    public List<Tensor> ForwardAllLayers(Tensor inputIds, Tensor? attentionMask)
    {
        var outputs = ForwardAllLayers(inputIds, attentionMask, out var embeddings);
        embeddings.Dispose();
        return outputs;
    }

    /// <summary>Every block's output, and in <paramref name="embeddings"/> the embedding output (the input of block 0,
    /// transformers' <c>hidden_states[0]</c>: embed_tokens(ids), its dropout a no-op in eval).</summary>
    public List<Tensor> ForwardAllLayers(Tensor inputIds, Tensor? attentionMask, out Tensor embeddings)
    {
        var ids = inputIds.reshape(-1, inputIds.shape[^1]);
        long batch = ids.shape[0], seq = ids.shape[1];
        var outputs = new List<Tensor>(block.Count);
        using (var scope = NewDisposeScope())
        {
            var inputsEmbeds = EmbedTokens.forward(ids);
            var dtype = inputsEmbeds.dtype;
            // attention_mask defaults to torch.ones(batch, seq) (float32), then
            // extended = mask[:, None, None, :].to(dtype); extended = (1.0 - extended) * finfo(dtype).min
            var mask = attentionMask is null
                ? torch.ones(new[] { batch, seq }, dtype: ScalarType.Float32, device: inputsEmbeds.device)
                : attentionMask.to(inputsEmbeds.device).view(-1, attentionMask.shape[^1]);
            if (mask.shape[0] != batch || mask.shape[1] != seq)
                throw new LensException($"attention mask shape [{string.Join(",", attentionMask!.shape)}] does not match input ids [{batch},{seq}]");
            var extended = mask.unsqueeze(1).unsqueeze(1).to(dtype);
            extended = (1.0 - extended) * torch.finfo(dtype).min;

            var positionBias = block[0].SelfAttentionLayer.Attention.ComputeBias(seq, seq, inputsEmbeds.device);
            positionBias = positionBias + extended;

            var h = inputsEmbeds;
            foreach (var b in block)
            {
                h = b.forward(h, positionBias);
                outputs.Add(h);
            }
            foreach (var o in outputs) o.MoveToOuterDisposeScope();
            embeddings = inputsEmbeds.MoveToOuterDisposeScope();
        }
        return outputs;
    }

    public Tensor FinalLayerNorm(Tensor hidden) => final_layer_norm.forward(hidden);

    public override Tensor forward(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var all = ForwardAllLayers(inputIds, attentionMask);
        return final_layer_norm.forward(all[^1]).MoveToOuterDisposeScope();
    }
}
