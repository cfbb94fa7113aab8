using DiffusionLens.Loading;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FluxTransformer2DModel</c> (models/transformers/transformer_flux.py), built from the transformer's
/// config.json. Keys: time_text_embed, context_embedder, x_embedder, transformer_blocks.N (double-stream),
/// single_transformer_blocks.N, norm_out, proj_out; pos_embed has no parameters. The input is the packed latent
/// sequence [B, S, in_channels] (2x2 patches of the VAE latents, packed by the pipeline), the output the same shape
/// with patch_size^2 * out_channels channels.
/// </summary>
internal sealed class FluxTransformer2DModel : nn.Module
{
    private readonly FluxPosEmbed pos_embed;
    private readonly CombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly Linear context_embedder;
    private readonly Linear x_embedder;
    private readonly ModuleList<FluxTransformerBlock> transformer_blocks;
    private readonly ModuleList<FluxSingleTransformerBlock> single_transformer_blocks;
    private readonly AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;

    public int InChannels { get; }
    public int OutChannels { get; }
    public int PatchSize { get; }
    public int InnerDim { get; }
    public int JointAttentionDim { get; }
    public int PooledProjectionDim { get; }
    public bool GuidanceEmbeds { get; }
    public int NumLayers { get; }
    public int NumSingleLayers { get; }

    public FluxTransformer2DModel(int patchSize = 1, int inChannels = 64, int? outChannels = null, int numLayers = 19,
        int numSingleLayers = 38, int attentionHeadDim = 128, int numAttentionHeads = 24, int jointAttentionDim = 4096,
        int pooledProjectionDim = 768, bool guidanceEmbeds = false, int[]? axesDimsRope = null) : base(nameof(FluxTransformer2DModel))
    {
        axesDimsRope ??= [16, 56, 56];
        if (axesDimsRope.Sum() != attentionHeadDim)
            throw new LensException($"FLUX transformer: axes_dims_rope [{string.Join(", ", axesDimsRope)}] must add up to attention_head_dim {attentionHeadDim}");
        PatchSize = patchSize;
        InChannels = inChannels;
        OutChannels = outChannels ?? inChannels;
        InnerDim = numAttentionHeads * attentionHeadDim;
        JointAttentionDim = jointAttentionDim;
        PooledProjectionDim = pooledProjectionDim;
        GuidanceEmbeds = guidanceEmbeds;
        NumLayers = numLayers;
        NumSingleLayers = numSingleLayers;

        pos_embed = new FluxPosEmbed(10000, axesDimsRope);
        time_text_embed = new CombinedTimestepTextProjEmbeddings(InnerDim, pooledProjectionDim, guidanceEmbeds);
        context_embedder = Layers.Linear(jointAttentionDim, InnerDim);
        x_embedder = Layers.Linear(inChannels, InnerDim);
        transformer_blocks = new ModuleList<FluxTransformerBlock>(
            Enumerable.Range(0, numLayers).Select(_ => new FluxTransformerBlock(InnerDim, numAttentionHeads, attentionHeadDim)).ToArray());
        single_transformer_blocks = new ModuleList<FluxSingleTransformerBlock>(
            Enumerable.Range(0, numSingleLayers).Select(_ => new FluxSingleTransformerBlock(InnerDim, numAttentionHeads, attentionHeadDim)).ToArray());
        norm_out = new AdaLayerNormContinuous(InnerDim, InnerDim, elementwiseAffine: false, eps: 1e-6);
        proj_out = Layers.Linear(InnerDim, (long)patchSize * patchSize * OutChannels);
        RegisterComponents();
    }

    /// <summary>Builds the transformer from its config.json with diffusers' defaults for missing keys.</summary>
    public static FluxTransformer2DModel FromConfig(DiffusersConfig cfg)
    {
        int[] axes = cfg.Has("axes_dims_rope") ? cfg.IntArray("axes_dims_rope") : [16, 56, 56];
        return new FluxTransformer2DModel(
            patchSize: cfg.Int("patch_size", 1),
            inChannels: cfg.Int("in_channels", 64),
            outChannels: cfg.IntOrNull("out_channels"),
            numLayers: cfg.Int("num_layers", 19),
            numSingleLayers: cfg.Int("num_single_layers", 38),
            attentionHeadDim: cfg.Int("attention_head_dim", 128),
            numAttentionHeads: cfg.Int("num_attention_heads", 24),
            jointAttentionDim: cfg.Int("joint_attention_dim", 4096),
            pooledProjectionDim: cfg.Int("pooled_projection_dim", 768),
            guidanceEmbeds: cfg.Bool("guidance_embeds", false),
            axesDimsRope: axes);
    }

    /// <summary>
    /// The forward pass: x_embedder; the timestep (and guidance) cast to the model's dtype and times 1000, embedded with
    /// the pooled projection; context_embedder; the rotary embedding of [txt_ids; img_ids]; the double-stream then the
    /// single-stream blocks; norm_out, proj_out.
    /// </summary>
    /// <param name="hidden">packed latents [B, S, in_channels]</param>
    /// <param name="encoderHidden">T5 prompt embeddings [B, T, joint_attention_dim]</param>
    /// <param name="pooled">pooled CLIP embeddings [B, pooled_projection_dim]</param>
    /// <param name="timestep">[B] timesteps divided by 1000 (as the pipeline passes them)</param>
    /// <param name="imgIds">[S, 3] image position ids</param>
    /// <param name="txtIds">[T, 3] text position ids (zeros)</param>
    /// <param name="guidance">[B] guidance scale (float32), exactly when guidance_embeds</param>
    public Tensor Forward(Tensor hidden, Tensor encoderHidden, Tensor pooled, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? guidance = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var h = x_embedder.forward(hidden);
        var t = timestep.to(h.dtype) * 1000;
        var g = guidance is null ? null : guidance.to(h.dtype) * 1000;
        var temb = time_text_embed.forward(t, g, pooled);
        var ctx = context_embedder.forward(encoderHidden);
        var ids = torch.cat(new[] { txtIds, imgIds }, 0);
        var (cos, sin) = pos_embed.Forward(ids);
        foreach (var block in transformer_blocks)
        {
            using var step = NewDisposeScope();
            var (c, x) = block.Forward(h, ctx, temb, cos, sin);
            ctx = c.MoveToOuterDisposeScope();
            h = x.MoveToOuterDisposeScope();
        }
        foreach (var block in single_transformer_blocks)
        {
            using var step = NewDisposeScope();
            var (c, x) = block.Forward(h, ctx, temb, cos, sin);
            ctx = c.MoveToOuterDisposeScope();
            h = x.MoveToOuterDisposeScope();
        }
        h = norm_out.forward(h, temb);
        return proj_out.forward(h).MoveToOuterDisposeScope();
    }
}
