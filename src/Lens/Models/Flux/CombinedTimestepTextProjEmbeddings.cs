using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>CombinedTimestepTextProjEmbeddings</c> (FLUX.1-schnell, guidance_embeds false) and, with
/// <c>guidance</c>, <c>CombinedTimestepGuidanceTextProjEmbeddings</c> (FLUX.1-dev): time_proj (sinusoidal, 256
/// channels, flip_sin_to_cos, shift 0; no parameters) -&gt; timestep_embedder [+ guidance_embedder of the guidance's own
/// projection] + text_embedder(pooled projection). Keys timestep_embedder, guidance_embedder (guidance only),
/// text_embedder. The projections are cast to the pooled embedding's dtype, as diffusers casts them.
/// </summary>
internal sealed class CombinedTimestepTextProjEmbeddings : nn.Module<Tensor, Tensor?, Tensor, Tensor>
{
    private const int ProjChannels = 256;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly TimestepEmbedding? guidance_embedder;
    private readonly PixArtAlphaTextProjection text_embedder;

    public bool HasGuidance => guidance_embedder is not null;

    public CombinedTimestepTextProjEmbeddings(int embeddingDim, int pooledProjectionDim, bool guidance)
        : base(nameof(CombinedTimestepTextProjEmbeddings))
    {
        timestep_embedder = new TimestepEmbedding(ProjChannels, embeddingDim);
        if (guidance) guidance_embedder = new TimestepEmbedding(ProjChannels, embeddingDim);
        text_embedder = new PixArtAlphaTextProjection(pooledProjectionDim, embeddingDim, actFn: "silu");
        RegisterComponents();
    }

    private static Tensor Project(Tensor t) => Timesteps.GetTimestepEmbedding(t, ProjChannels, flipSinToCos: true, downscaleFreqShift: 0);

    /// <param name="timestep">[B] timesteps (times 1000, in the model's dtype)</param>
    /// <param name="guidance">[B] guidance (times 1000), required exactly when the model has guidance_embeds</param>
    /// <param name="pooledProjection">[B, pooled_projection_dim]</param>
    public override Tensor forward(Tensor timestep, Tensor? guidance, Tensor pooledProjection)
    {
        if ((guidance is null) == HasGuidance)
            throw new LensException(HasGuidance ? "this FLUX transformer embeds the guidance (guidance_embeds): a guidance value is required"
                : "this FLUX transformer has no guidance embedding (guidance_embeds false): no guidance value is taken");
        using var scope = NewDisposeScope();
        var emb = timestep_embedder.forward(Project(timestep).to(pooledProjection.dtype));
        if (guidance_embedder is not null) emb = emb + guidance_embedder.forward(Project(guidance!).to(pooledProjection.dtype));
        return (emb + text_embedder.forward(pooledProjection)).MoveToOuterDisposeScope();
    }
}
