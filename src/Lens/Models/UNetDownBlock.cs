using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// Common shape of a diffusers UNet down block (CrossAttnDownBlock2D, DownBlock2D, ...), so
/// <see cref="UNet2DConditionModel"/> can call them uniformly. Subclasses hold their submodules as fields named like
/// the checkpoint keys (resnets, attentions, downsamplers) and call RegisterComponents().
/// </summary>
internal abstract class UNetDownBlock : nn.Module
{
    protected UNetDownBlock(string name) : base(name) { }

    /// <summary>diffusers' <c>has_cross_attention</c>: whether the block takes encoder hidden states and masks.</summary>
    public virtual bool HasCrossAttention => false;

    /// <summary>
    /// Returns the block's output and its residual states (<c>output_states</c>) in diffusers' order. A residual may be
    /// the same tensor object as <c>Hidden</c>.
    /// </summary>
    public abstract (Tensor Hidden, Tensor[] Residuals) Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null);
}
