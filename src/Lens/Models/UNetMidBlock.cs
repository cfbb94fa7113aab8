using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>Common shape of a diffusers UNet mid block (UNetMidBlock2DCrossAttn, UNetMidBlock2D, ...).</summary>
internal abstract class UNetMidBlock : nn.Module
{
    protected UNetMidBlock(string name) : base(name) { }

    public virtual bool HasCrossAttention => false;

    public abstract Tensor Forward(Tensor hidden, Tensor? temb, Tensor? encoderHidden = null,
        Tensor? attentionMask = null, Tensor? encoderAttentionMask = null);
}
