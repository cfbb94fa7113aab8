using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers <c>T5Attention</c> for encoder self-attention (eager; T5 has no SDPA path): no 1/sqrt(d) scaling,
/// scores = q @ k^T; scores += position_bias (relative bias + additive padding mask, computed once by the first block
/// and shared); softmax in float32, cast back to the scores' dtype; @ v; o.
/// Only the first block has <c>relative_attention_bias</c> (an Embedding num_buckets x n_heads).
/// </summary>
internal sealed class T5Attention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Models.Linear q;
    private readonly Models.Linear k;
    private readonly Models.Linear v;
    private readonly Models.Linear o;
    private readonly Embedding? relative_attention_bias;

    private readonly long _nHeads;
    private readonly long _dKv;
    private readonly long _innerDim;
    private readonly int _numBuckets;
    private readonly int _maxDistance;

    public T5Attention(T5Config config, bool hasRelativeAttentionBias, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base(nameof(T5Attention))
    {
        _nHeads = config.NumHeads;
        _dKv = config.DKv;
        _innerDim = config.InnerDim;
        _numBuckets = config.RelativeAttentionNumBuckets;
        _maxDistance = config.RelativeAttentionMaxDistance;
        q = TextEncoderParts.Linear(config.DModel, _innerDim, false, device, dtype);
        k = TextEncoderParts.Linear(config.DModel, _innerDim, false, device, dtype);
        v = TextEncoderParts.Linear(config.DModel, _innerDim, false, device, dtype);
        o = TextEncoderParts.Linear(_innerDim, config.DModel, false, device, dtype);
        if (hasRelativeAttentionBias)
            relative_attention_bias = TextEncoderParts.Embedding(_numBuckets, _nHeads, device, dtype);
        RegisterComponents();
    }

    public bool HasRelativeAttentionBias => relative_attention_bias is not null;

    /// <summary>
    /// T5Attention._relative_position_bucket (bidirectional for the encoder): the sign takes half the buckets, half of the
    /// rest are exact small distances, the others are logarithmic up to max_distance.
    /// </summary>
    public static Tensor RelativePositionBucket(Tensor relativePosition, bool bidirectional, int numBuckets, int maxDistance)
    {
        using var scope = NewDisposeScope();
        Tensor relativeBuckets;
        if (bidirectional)
        {
            numBuckets /= 2;
            relativeBuckets = (relativePosition > 0).to(ScalarType.Int64) * numBuckets;
            relativePosition = torch.abs(relativePosition);
        }
        else
        {
            relativeBuckets = torch.zeros_like(relativePosition);
            relativePosition = -torch.min(relativePosition, torch.zeros_like(relativePosition));
        }
        int maxExact = numBuckets / 2;
        var isSmall = relativePosition < maxExact;
        var ifLarge = (torch.log(relativePosition.to(ScalarType.Float32) / maxExact)
                       / Math.Log((double)maxDistance / maxExact)
                       * (numBuckets - maxExact)).to(ScalarType.Int64) + maxExact;
        ifLarge = torch.min(ifLarge, torch.full_like(ifLarge, numBuckets - 1));
        relativeBuckets = relativeBuckets + torch.where(isSmall, relativePosition, ifLarge);
        return relativeBuckets.MoveToOuterDisposeScope();
    }

    /// <summary>T5Attention.compute_bias: (1, n_heads, query_length, key_length) in the bias embedding's dtype.</summary>
    public Tensor ComputeBias(long queryLength, long keyLength, Device device)
    {
        if (relative_attention_bias is null) throw new InvalidOperationException("this T5Attention has no relative_attention_bias");
        using var scope = NewDisposeScope();
        var contextPosition = torch.arange(queryLength, dtype: ScalarType.Int64, device: device).unsqueeze(1);
        var memoryPosition = torch.arange(keyLength, dtype: ScalarType.Int64, device: device).unsqueeze(0);
        var relativePosition = memoryPosition - contextPosition;
        var bucket = RelativePositionBucket(relativePosition, bidirectional: true, _numBuckets, _maxDistance);
        var values = relative_attention_bias.forward(bucket); // (q, k, heads)
        values = values.permute(2, 0, 1).unsqueeze(0);
        return values.MoveToOuterDisposeScope();
    }

    /// <param name="hiddenStates">(batch, seq, d_model), already layer-normed</param>
    /// <param name="positionBias">(batch or 1, n_heads, seq, seq): relative bias plus the additive mask</param>
    public override Tensor forward(Tensor hiddenStates, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        long b = hiddenStates.shape[0];
        var queryStates = q.forward(hiddenStates).view(b, -1, _nHeads, _dKv).transpose(1, 2);
        var keyStates = k.forward(hiddenStates).view(b, -1, _nHeads, _dKv).transpose(1, 2);
        var valueStates = v.forward(hiddenStates).view(b, -1, _nHeads, _dKv).transpose(1, 2);

        var scores = torch.matmul(queryStates, keyStates.transpose(3, 2));
        scores.add_(positionBias);
        var attnWeights = nn.functional.softmax(scores.to(ScalarType.Float32), -1).type_as(scores);
        var attnOutput = torch.matmul(attnWeights, valueStates);
        attnOutput = attnOutput.transpose(1, 2).contiguous();
        attnOutput = attnOutput.view(b, -1, _innerDim);
        return o.forward(attnOutput).MoveToOuterDisposeScope();
    }
}
