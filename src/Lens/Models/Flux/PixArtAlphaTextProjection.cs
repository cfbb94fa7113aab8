using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>PixArtAlphaTextProjection</c> (models/embeddings.py): linear_1 -&gt; act_1 (SiLU, or tanh-GELU) -&gt;
/// linear_2. FLUX's <c>text_embedder</c> of the pooled CLIP embedding.
/// </summary>
internal sealed class PixArtAlphaTextProjection : nn.Module<Tensor, Tensor>
{
    private readonly Linear linear_1;
    private readonly Linear linear_2;
    private readonly bool _silu;

    /// <param name="actFn">"silu" or "gelu_tanh" (diffusers' default)</param>
    public PixArtAlphaTextProjection(int inFeatures, int hiddenSize, int? outFeatures = null, string actFn = "gelu_tanh")
        : base(nameof(PixArtAlphaTextProjection))
    {
        _silu = actFn switch
        {
            "silu" => true,
            "gelu_tanh" => false,
            _ => throw new LensException($"unsupported PixArtAlphaTextProjection act_fn '{actFn}'"),
        };
        linear_1 = Layers.Linear(inFeatures, hiddenSize);
        linear_2 = Layers.Linear(hiddenSize, outFeatures ?? hiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor caption)
    {
        using var scope = NewDisposeScope();
        var h = linear_1.forward(caption);
        h = _silu ? nn.functional.silu(h) : nn.functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh);
        return linear_2.forward(h).MoveToOuterDisposeScope();
    }
}
