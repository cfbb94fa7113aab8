using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers VAE <c>Decoder</c> (models/autoencoders/vae.py), norm_type "group": conv_in -> UNetMidBlock2D ->
/// up_blocks (UpDecoderBlock2D with layers_per_block + 1 resnets, eps 1e-6, no time embedding) -> conv_norm_out
/// (GroupNorm eps 1e-6) -> SiLU -> conv_out.
/// </summary>
internal sealed class Decoder : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv_in;
    private readonly UNetMidBlock2D mid_block;
    private readonly ModuleList<UpDecoderBlock2D> up_blocks;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    public Decoder(int inChannels = 3, int outChannels = 3, string[]? upBlockTypes = null, int[]? blockOutChannels = null,
        int layersPerBlock = 2, int normNumGroups = 32, string actFn = "silu", string normType = "group",
        bool midBlockAddAttention = true) : base(nameof(Decoder))
    {
        upBlockTypes ??= ["UpDecoderBlock2D"];
        blockOutChannels ??= [64];
        if (normType != "group")
            throw new LensException($"VAE decoder: norm_type '{normType}' is not supported (only 'group')");
        if (upBlockTypes.Length != blockOutChannels.Length)
            throw new LensException($"VAE decoder: {upBlockTypes.Length} up_block_types for {blockOutChannels.Length} block_out_channels");

        conv_in = Layers.Conv2d(inChannels, blockOutChannels[^1], 3, stride: 1, padding: 1);
        int? tembChannels = null;
        mid_block = new UNetMidBlock2D(blockOutChannels[^1], tembChannels, resnetEps: 1e-6, resnetActFn: actFn,
            outputScaleFactor: 1, resnetTimeScaleShift: "default", attentionHeadDim: blockOutChannels[^1],
            resnetGroups: normNumGroups, addAttention: midBlockAddAttention);

        var reversed = blockOutChannels.Reverse().ToArray();
        int outputChannel = reversed[0];
        var blocks = new UpDecoderBlock2D[upBlockTypes.Length];
        for (int i = 0; i < upBlockTypes.Length; i++)
        {
            int prevOutputChannel = outputChannel;
            outputChannel = reversed[i];
            bool isFinal = i == blockOutChannels.Length - 1;
            var type = upBlockTypes[i].StartsWith("UNetRes") ? upBlockTypes[i][7..] : upBlockTypes[i];
            blocks[i] = type switch
            {
                // get_up_block passes in_channels=prev_output_channel and resnet_time_scale_shift=norm_type ("group")
                "UpDecoderBlock2D" => new UpDecoderBlock2D(prevOutputChannel, outputChannel, resolutionIdx: null,
                    numLayers: layersPerBlock + 1, resnetEps: 1e-6, resnetTimeScaleShift: normType, resnetActFn: actFn,
                    resnetGroups: normNumGroups, addUpsample: !isFinal, tembChannels: tembChannels),
                _ => throw new LensException($"unsupported VAE up block type '{upBlockTypes[i]}' (only UpDecoderBlock2D)"),
            };
        }
        up_blocks = new ModuleList<UpDecoderBlock2D>(blocks);
        conv_norm_out = Norms.GroupNorm(normNumGroups, blockOutChannels[0], 1e-6, affine: true);
        conv_out = Layers.Conv2d(blockOutChannels[0], outChannels, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        sample = conv_in.forward(sample);
        sample = mid_block.Forward(sample, null);
        foreach (var block in up_blocks) sample = block.forward(sample, null);
        sample = conv_norm_out.forward(sample);
        sample = nn.functional.silu(sample);
        sample = conv_out.forward(sample);
        return sample.MoveToOuterDisposeScope();
    }
}
