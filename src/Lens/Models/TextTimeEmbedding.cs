using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>TextTimeEmbedding</c> (models/embeddings.py; UNet2DConditionModel's <c>add_embedding</c> for
/// addition_embed_type "text", DeepFloyd IF): norm1 (LayerNorm) -> pool (<see cref="AttentionPooling"/>) -> proj
/// (Linear to the time embedding width) -> norm2 (LayerNorm). Input [B, T, encoder_dim], output [B, time_embed_dim].
/// </summary>
internal sealed class TextTimeEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly AttentionPooling pool;
    private readonly Linear proj;
    private readonly LayerNorm norm2;

    public TextTimeEmbedding(int encoderDim, int timeEmbedDim, int numHeads = 64) : base(nameof(TextTimeEmbedding))
    {
        norm1 = Layers.LayerNorm(encoderDim);
        pool = new AttentionPooling(numHeads, encoderDim);
        proj = Layers.Linear(encoderDim, timeEmbedDim);
        norm2 = Layers.LayerNorm(timeEmbedDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        hidden = norm1.forward(hidden);
        hidden = pool.forward(hidden);
        hidden = proj.forward(hidden);
        hidden = norm2.forward(hidden);
        return hidden.MoveToOuterDisposeScope();
    }
}
