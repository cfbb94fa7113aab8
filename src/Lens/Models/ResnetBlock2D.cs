using DiffusionLens.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>ResnetBlock2D</c> (models/resnet.py): GroupNorm -> act -> [up/down] -> conv1 -> + time embedding
/// ("default": add; "scale_shift": norm2 then x*(1+scale)+shift) -> norm2 -> act -> conv2, plus the (1x1) shortcut,
/// divided by output_scale_factor. Field names are the checkpoint's keys. On CUDA in 16-bit types (<see cref="FusedKernels"/>)
/// each norm runs fused with the convolution bias before it, the scale-shift and the activation after it, and the
/// residual sum with the biases of conv2 and the shortcut: three passes over the activations where the ops make eight.
/// </summary>
internal sealed class ResnetBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly Linear? time_emb_proj;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;
    private readonly Upsample2D? upsample;
    private readonly Downsample2D? downsample;

    private readonly Func<Tensor, Tensor> _act;
    private readonly string _timeEmbeddingNorm;
    private readonly double _outputScaleFactor;
    private readonly bool _skipTimeAct;
    private readonly FusedKernels.Activation? _fusedAct;

    public ResnetBlock2D(int inChannels, int? outChannels = null, int? tembChannels = 512, int groups = 32,
        int? groupsOut = null, double eps = 1e-6, string nonLinearity = "swish", string timeEmbeddingNorm = "default",
        double outputScaleFactor = 1.0, bool? useInShortcut = null, bool up = false, bool down = false,
        bool convShortcutBias = true, bool skipTimeAct = false) : base(nameof(ResnetBlock2D))
    {
        int outC = outChannels ?? inChannels;
        norm1 = Norms.GroupNorm(groups, inChannels, eps, affine: true);
        conv1 = Layers.Conv2d(inChannels, outC, 3, stride: 1, padding: 1);
        if (tembChannels is int tc)
        {
            time_emb_proj = timeEmbeddingNorm switch
            {
                "default" => Layers.Linear(tc, outC),
                "scale_shift" => Layers.Linear(tc, 2 * outC),
                _ => throw new LensException($"unsupported resnet_time_scale_shift / time_embedding_norm '{timeEmbeddingNorm}'"),
            };
        }
        norm2 = Norms.GroupNorm(groupsOut ?? groups, outC, eps, affine: true);
        conv2 = Layers.Conv2d(outC, outC, 3, stride: 1, padding: 1);
        if (up) upsample = new Upsample2D(inChannels, useConv: false);
        else if (down) downsample = new Downsample2D(inChannels, useConv: false, padding: 1);
        if (useInShortcut ?? inChannels != outC)
            conv_shortcut = Layers.Conv2d(inChannels, outC, 1L, stride: 1L, padding: 0L, bias: convShortcutBias);

        _act = Activations.Get(nonLinearity);
        _fusedAct = FusedKernels.ActivationOf(nonLinearity);
        _timeEmbeddingNorm = timeEmbeddingNorm;
        _outputScaleFactor = outputScaleFactor;
        _skipTimeAct = skipTimeAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input, Tensor? temb)
    {
        if (_fusedAct is FusedKernels.Activation act && FusedKernels.Applies(input)) return ForwardFused(input, temb, act);
        using var scope = NewDisposeScope();
        // each intermediate is released as soon as the next one exists (TensorScopes.Then); additions into fresh
        // buffers are in place (the same sums: a + b == b + a exactly)
        var h = norm1.forward(input);
        h = TensorScopes.Then(h, _act(h), input);
        var x = input;
        if (upsample is not null)
        {
            x = upsample.forward(x, null);
            h = TensorScopes.Then(h, upsample.forward(h, null), input);
        }
        else if (downsample is not null)
        {
            x = downsample.forward(x);
            h = TensorScopes.Then(h, downsample.forward(h), input);
        }
        h = TensorScopes.Then(h, conv1.forward(h), input);

        Tensor? t = null;
        if (time_emb_proj is not null && temb is not null)
        {
            t = _skipTimeAct ? temb : _act(temb);
            t = time_emb_proj.forward(t).unsqueeze(-1).unsqueeze(-1);
        }
        if (_timeEmbeddingNorm == "scale_shift")
        {
            if (t is null) throw new InvalidOperationException("scale_shift resnet needs a time embedding");
            var parts = t.chunk(2, dim: 1);
            h = TensorScopes.Then(h, norm2.forward(h), input);
            h = TensorScopes.Then(h, h * (1 + parts[0]) + parts[1], input);
        }
        else
        {
            if (t is not null) h = h.add_(t);
            h = TensorScopes.Then(h, norm2.forward(h), input);
        }
        h = TensorScopes.Then(h, _act(h), input);
        h = TensorScopes.Then(h, conv2.forward(h), input);
        if (conv_shortcut is not null) x = conv_shortcut.forward(x);
        var output = h.add_(x); // input_tensor + hidden_states
        if (_outputScaleFactor != 1.0) output = TensorScopes.Then(output, output / _outputScaleFactor, input);
        return output.MoveToOuterDisposeScope();
    }

    private Tensor ForwardFused(Tensor input, Tensor? temb, FusedKernels.Activation act)
    {
        using var scope = NewDisposeScope();
        var h = FusedKernels.GroupNorm(input, norm1.NumGroups, norm1.weight, norm1.bias, norm1.Eps, act);
        var x = input;
        if (upsample is not null)
        {
            x = upsample.forward(x, null);
            h = TensorScopes.Then(h, upsample.forward(h, null), input);
        }
        else if (downsample is not null)
        {
            x = downsample.forward(x);
            h = TensorScopes.Then(h, downsample.forward(h), input);
        }
        h = TensorScopes.Then(h, conv1.ForwardWithoutBias(h), input);

        Tensor? t = null;
        if (time_emb_proj is not null && temb is not null)
            t = time_emb_proj.forward(_skipTimeAct ? temb : _act(temb)); // [N, C] or [N, 2C]
        if (_timeEmbeddingNorm == "scale_shift")
        {
            if (t is null) throw new InvalidOperationException("scale_shift resnet needs a time embedding");
            h = TensorScopes.Then(h, FusedKernels.GroupNorm(h, norm2.NumGroups, norm2.weight, norm2.bias, norm2.Eps, act, scaleShift: t, biasIn: conv1.bias), input);
        }
        else
        {
            // conv1's bias and the time embedding both add per (row, channel) before the norm
            var biasIn = t is null ? conv1.bias : conv1.bias is null ? t : t + conv1.bias;
            h = TensorScopes.Then(h, FusedKernels.GroupNorm(h, norm2.NumGroups, norm2.weight, norm2.bias, norm2.Eps, act, biasIn: biasIn), input);
        }
        h = TensorScopes.Then(h, conv2.ForwardWithoutBias(h), input);
        var output = conv_shortcut is not null
            ? FusedKernels.Residual(h, conv2.bias, conv_shortcut.ForwardWithoutBias(x), conv_shortcut.bias, _outputScaleFactor)
            : FusedKernels.Residual(h, conv2.bias, x, null, _outputScaleFactor);
        return output.MoveToOuterDisposeScope();
    }
}
