using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers VAE <c>Encoder</c> (models/autoencoders/vae.py): conv_in -> down_blocks (DownEncoderBlock2D, eps 1e-6,
/// downsample padding 0) -> UNetMidBlock2D (one attention head of block_out_channels[-1] channels) -> conv_norm_out
/// (GroupNorm eps 1e-6) -> SiLU -> conv_out (2*out_channels when double_z).
/// </summary>
internal sealed class Encoder : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv_in;
    private readonly ModuleList<DownEncoderBlock2D> down_blocks;
    private readonly UNetMidBlock2D mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    public Encoder(int inChannels = 3, int outChannels = 3, string[]? downBlockTypes = null, int[]? blockOutChannels = null,
        int layersPerBlock = 2, int normNumGroups = 32, string actFn = "silu", bool doubleZ = true,
        bool midBlockAddAttention = true) : base(nameof(Encoder))
    {
        downBlockTypes ??= ["DownEncoderBlock2D"];
        blockOutChannels ??= [64];
        if (downBlockTypes.Length != blockOutChannels.Length)
            throw new LensException($"VAE encoder: {downBlockTypes.Length} down_block_types for {blockOutChannels.Length} block_out_channels");

        conv_in = Layers.Conv2d(inChannels, blockOutChannels[0], 3, stride: 1, padding: 1);
        var blocks = new DownEncoderBlock2D[downBlockTypes.Length];
        int outputChannel = blockOutChannels[0];
        for (int i = 0; i < downBlockTypes.Length; i++)
        {
            int inputChannel = outputChannel;
            outputChannel = blockOutChannels[i];
            bool isFinal = i == blockOutChannels.Length - 1;
            var type = downBlockTypes[i].StartsWith("UNetRes") ? downBlockTypes[i][7..] : downBlockTypes[i];
            blocks[i] = type switch
            {
                "DownEncoderBlock2D" => new DownEncoderBlock2D(inputChannel, outputChannel, numLayers: layersPerBlock,
                    resnetEps: 1e-6, resnetActFn: actFn, resnetGroups: normNumGroups, addDownsample: !isFinal,
                    downsamplePadding: 0),
                _ => throw new LensException($"unsupported VAE down block type '{downBlockTypes[i]}' (only DownEncoderBlock2D)"),
            };
        }
        down_blocks = new ModuleList<DownEncoderBlock2D>(blocks);
        mid_block = new UNetMidBlock2D(blockOutChannels[^1], tembChannels: null, resnetEps: 1e-6, resnetActFn: actFn,
            outputScaleFactor: 1, resnetTimeScaleShift: "default", attentionHeadDim: blockOutChannels[^1],
            resnetGroups: normNumGroups, addAttention: midBlockAddAttention);
        conv_norm_out = Norms.GroupNorm(normNumGroups, blockOutChannels[^1], 1e-6, affine: true);
        conv_out = Layers.Conv2d(blockOutChannels[^1], doubleZ ? 2 * outChannels : outChannels, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        sample = conv_in.forward(sample);
        foreach (var block in down_blocks) sample = block.forward(sample);
        sample = mid_block.Forward(sample, null);
        sample = conv_norm_out.forward(sample);
        sample = nn.functional.silu(sample);
        sample = conv_out.forward(sample);
        return sample.MoveToOuterDisposeScope();
    }
}
