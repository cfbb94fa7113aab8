using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>FluxPosEmbed</c> (models/transformers/transformer_flux.py; no parameters): the rotary embedding of
/// position ids [S, n_axes] (text ids then image ids): for each axis i, <see cref="RotaryPosEmbed"/> of
/// axes_dims_rope[i] dimensions at theta 10000, concatenated to cos, sin [S, sum(axes)] float32. The frequencies are
/// float64 as diffusers computes them on CUDA and the CPU.
/// </summary>
internal sealed class FluxPosEmbed : nn.Module
{
    public int Theta { get; }
    public int[] AxesDim { get; }

    public FluxPosEmbed(int theta, int[] axesDim) : base(nameof(FluxPosEmbed))
    {
        Theta = theta;
        AxesDim = axesDim;
        RegisterComponents();
    }

    /// <summary>(cos, sin), each [S, sum(axes_dim)] float32 on the ids' device.</summary>
    public (Tensor Cos, Tensor Sin) Forward(Tensor ids)
    {
        if (ids.ndim != 2 || ids.shape[1] != AxesDim.Length)
            throw new LensException($"FLUX position ids must be [S, {AxesDim.Length}], got [{string.Join(", ", ids.shape)}]");
        using var scope = NewDisposeScope();
        var pos = ids.to(ScalarType.Float32);
        var cos = new List<Tensor>();
        var sin = new List<Tensor>();
        for (int i = 0; i < AxesDim.Length; i++)
        {
            var (c, s) = RotaryPosEmbed(AxesDim[i], pos.select(1, i), Theta);
            cos.Add(c);
            sin.Add(s);
        }
        return (torch.cat(cos, -1).MoveToOuterDisposeScope(), torch.cat(sin, -1).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// diffusers <c>get_1d_rotary_pos_embed(dim, pos, theta, use_real=True, repeat_interleave_real=True,
    /// freqs_dtype=float64)</c>: freqs = 1 / theta^(arange(0, dim, 2) / dim) in float64, outer(pos, freqs), cos and sin
    /// each repeated twice along the last dimension (interleaved), as float32. [S, dim] each.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) RotaryPosEmbed(int dim, Tensor pos, double theta)
    {
        if (dim % 2 != 0) throw new LensException($"a rotary axis needs an even number of dimensions, got {dim}");
        using var scope = NewDisposeScope();
        var exponent = torch.arange(0, dim, 2, dtype: ScalarType.Float64, device: pos.device) / dim;
        var freqs = 1.0 / torch.full_like(exponent, theta).pow(exponent);
        freqs = torch.outer(pos, freqs); // float32 x float64 -> float64, as torch.outer promotes
        var cos = freqs.cos().repeat_interleave(2, dim: 1).to(ScalarType.Float32);
        var sin = freqs.sin().repeat_interleave(2, dim: 1).to(ScalarType.Float32);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// diffusers <c>apply_rotary_emb(x, (cos, sin), use_real=True, use_real_unbind_dim=-1, sequence_dim=1)</c> for
    /// x [B, S, H, D]: pairs (x_real, x_imag) of the last dimension, rotated = interleave(-x_imag, x_real);
    /// (x.float() * cos + rotated.float() * sin).to(x.dtype).
    /// </summary>
    public static Tensor ApplyRotaryEmb(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var c = cos.unsqueeze(0).unsqueeze(2).to(x.device);
        var s = sin.unsqueeze(0).unsqueeze(2).to(x.device);
        var shape = x.shape;
        var pairs = x.reshape(shape[0], shape[1], shape[2], shape[3] / 2, 2).unbind(-1);
        var rotated = torch.stack(new[] { -pairs[1], pairs[0] }, -1).flatten(3);
        var outp = (x.to(ScalarType.Float32) * c + rotated.to(ScalarType.Float32) * s).to(x.dtype);
        return outp.MoveToOuterDisposeScope();
    }
}
