using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// Common shape of a diffusers UNet up block (CrossAttnUpBlock2D, UpBlock2D, ...). The block consumes
/// <see cref="NumResnets"/> skip connections, popping them from the end of the tuple it is given.
/// </summary>
internal abstract class UNetUpBlock : nn.Module
{
    protected UNetUpBlock(string name) : base(name) { }

    public virtual bool HasCrossAttention => false;

    /// <summary><c>len(up_block.resnets)</c>: how many skip connections the block takes.</summary>
    public abstract int NumResnets { get; }

    /// <param name="resHiddenStates">the skip connections for this block, oldest first (diffusers' res_hidden_states_tuple)</param>
    /// <param name="upsampleSize">forwarded output size for the upsampler, or null for a plain x2</param>
    public abstract Tensor Forward(Tensor hidden, Tensor[] resHiddenStates, Tensor? temb, Tensor? encoderHidden = null,
        long[]? upsampleSize = null, Tensor? attentionMask = null, Tensor? encoderAttentionMask = null);
}
