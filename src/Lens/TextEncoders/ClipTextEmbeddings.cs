using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextEmbeddings</c>: token_embedding(input_ids) + position_embedding(position_ids), with
/// position_ids = arange(seq_len) (the non-persistent <c>position_ids</c> buffer is computed on the fly).
/// </summary>
internal sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;
    private readonly long _maxPositions;

    public ClipTextEmbeddings(ClipTextConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(ClipTextEmbeddings))
    {
        token_embedding = TextEncoderParts.Embedding(config.VocabSize, config.HiddenSize, device, dtype);
        position_embedding = TextEncoderParts.Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device, dtype);
        _maxPositions = config.MaxPositionEmbeddings;
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds)
    {
        long seq = inputIds.shape[^1];
        if (seq > _maxPositions)
            throw new LensException($"sequence length {seq} exceeds the text encoder's max_position_embeddings {_maxPositions}");
        using var scope = NewDisposeScope();
        var positionIds = torch.arange(seq, dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        var inputsEmbeds = token_embedding.forward(inputIds);
        var positionEmbeddings = position_embedding.forward(positionIds);
        return (inputsEmbeds + positionEmbeddings).MoveToOuterDisposeScope();
    }
}
