using DiffusionLens.Loading;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>AutoencoderKL</c> (models/autoencoders/autoencoder_kl.py), built from the vae config.json. Keys:
/// encoder.*, decoder.*, quant_conv, post_quant_conv (each only when use_quant_conv / use_post_quant_conv, default true).
/// No tiling or slicing. forward(sample) = decode(encode(sample).mode()), as diffusers with sample_posterior=False.
/// </summary>
internal sealed class AutoencoderKL : nn.Module<Tensor, Tensor>
{
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Conv2d? quant_conv;
    private readonly Conv2d? post_quant_conv;

    public double ScalingFactor { get; }
    public double? ShiftFactor { get; }
    /// <summary>Spatial downscale between image and latent: 2^(len(block_out_channels) - 1) (the pipelines' vae_scale_factor).</summary>
    public int ScaleFactor { get; }
    public int LatentChannels { get; }
    public int InChannels { get; }
    public int OutChannels { get; }

    public AutoencoderKL(int inChannels = 3, int outChannels = 3, string[]? downBlockTypes = null,
        string[]? upBlockTypes = null, int[]? blockOutChannels = null, int layersPerBlock = 1, string actFn = "silu",
        int latentChannels = 4, int normNumGroups = 32, double scalingFactor = 0.18215, double? shiftFactor = null,
        bool useQuantConv = true, bool usePostQuantConv = true, bool midBlockAddAttention = true) : base(nameof(AutoencoderKL))
    {
        downBlockTypes ??= ["DownEncoderBlock2D"];
        upBlockTypes ??= ["UpDecoderBlock2D"];
        blockOutChannels ??= [64];
        InChannels = inChannels;
        OutChannels = outChannels;
        LatentChannels = latentChannels;
        ScalingFactor = scalingFactor;
        ShiftFactor = shiftFactor;
        ScaleFactor = 1 << (blockOutChannels.Length - 1);

        encoder = new Encoder(inChannels, latentChannels, downBlockTypes, blockOutChannels, layersPerBlock,
            normNumGroups, actFn, doubleZ: true, midBlockAddAttention: midBlockAddAttention);
        decoder = new Decoder(latentChannels, outChannels, upBlockTypes, blockOutChannels, layersPerBlock,
            normNumGroups, actFn, midBlockAddAttention: midBlockAddAttention);
        if (useQuantConv) quant_conv = Layers.Conv2d(2 * latentChannels, 2 * latentChannels, 1);
        if (usePostQuantConv) post_quant_conv = Layers.Conv2d(latentChannels, latentChannels, 1);
        RegisterComponents();
    }

    /// <summary>Builds the VAE from its config.json with diffusers' defaults for missing keys.</summary>
    public static AutoencoderKL FromConfig(DiffusersConfig cfg)
    {
        cfg.RequireSupported("down_block_types", ["DownEncoderBlock2D"]);
        cfg.RequireSupported("up_block_types", ["UpDecoderBlock2D"]);
        cfg.RequireSupported("act_fn", Activations.Names, ignoreCase: true);
        if (cfg.Has("latents_mean") || cfg.Has("latents_std"))
            throw new LensException($"{cfg.Path}: latents_mean / latents_std are not supported");
        return new AutoencoderKL(
            inChannels: cfg.Int("in_channels", 3),
            outChannels: cfg.Int("out_channels", 3),
            downBlockTypes: cfg.Has("down_block_types") ? cfg.StrArray("down_block_types") : null,
            upBlockTypes: cfg.Has("up_block_types") ? cfg.StrArray("up_block_types") : null,
            blockOutChannels: cfg.Has("block_out_channels") ? cfg.IntArray("block_out_channels") : null,
            layersPerBlock: cfg.Int("layers_per_block", 1),
            actFn: cfg.Str("act_fn", "silu"),
            latentChannels: cfg.Int("latent_channels", 4),
            normNumGroups: cfg.Int("norm_num_groups", 32),
            scalingFactor: cfg.Double("scaling_factor", 0.18215),
            shiftFactor: cfg.DoubleOrNull("shift_factor"),
            useQuantConv: cfg.Bool("use_quant_conv", true),
            usePostQuantConv: cfg.Bool("use_post_quant_conv", true),
            midBlockAddAttention: cfg.Bool("mid_block_add_attention", true));
    }

    /// <summary>Module paths (as in the state dict) of the attention blocks whose legacy checkpoints use query/key/value/proj_attn.</summary>
    public IEnumerable<string> DeprecatedAttentionPaths() =>
        named_modules().Where(m => m.module is Attention a && a.FromDeprecatedAttnBlock).Select(m => m.name);

    /// <summary>encoder -> quant_conv: the moments [B, 2*latent_channels, H/f, W/f].</summary>
    public Tensor EncodeMoments(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = encoder.forward(x);
        if (quant_conv is not null) h = quant_conv.forward(h);
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers <c>encode(x).latent_dist</c>.</summary>
    public DiagonalGaussianDistribution Encode(Tensor x) => new(EncodeMoments(x));

    /// <summary>diffusers <c>decode(z).sample</c>: post_quant_conv -> decoder. z is the unscaled latent.</summary>
    public Tensor Decode(Tensor z)
    {
        using var scope = NewDisposeScope();
        if (post_quant_conv is not null) z = post_quant_conv.forward(z);
        var dec = decoder.forward(z);
        return dec.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor sample)
    {
        using var posterior = Encode(sample);
        return Decode(posterior.Mean);
    }
}
