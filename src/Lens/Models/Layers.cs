using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// The layer constructors of the diffusion models (Linear, Conv2d, LayerNorm, GroupNorm, free parameters).
/// By default they build what TorchSharp builds (float32 on the CPU, PyTorch's random initialisation: the random-init
/// tests rely on it). Inside <see cref="ForLoading"/> they build parameters that are about to be overwritten by
/// <see cref="Loading.StrictLoader"/>: uninitialised (<c>torch.empty</c>), directly in the target dtype and on the target
/// device, with no initialisation pass and no float32/CPU staging copy.
/// </summary>
internal static class Layers
{
    [ThreadStatic] private static Target? _target;

    private sealed record Target(Device Device, ScalarType DType);

    /// <summary>True inside <see cref="ForLoading"/>: parameters are left uninitialised.</summary>
    public static bool Uninitialised => _target is not null;

    /// <summary>Builds the modules constructed on this thread until disposal for loading onto <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public static IDisposable ForLoading(Device device, ScalarType dtype)
    {
        var previous = _target;
        _target = new Target(device, dtype);
        return new Restore(previous);
    }

    private sealed class Restore(Target? previous) : IDisposable
    {
        public void Dispose() => _target = previous;
    }

    private static Parameter Empty(long[] shape, Target t) =>
        new(torch.empty(shape, dtype: t.DType, device: t.Device), requires_grad: false);

    public static Linear Linear(long inFeatures, long outFeatures, bool hasBias = true)
    {
        if (_target is not Target t)
        {
            // torch.nn.Linear's initialisation (the same draws as before), its parameters in the module that computes as at::linear
            var init = nn.Linear(inFeatures, outFeatures, hasBias);
            return new Linear(init.weight!, hasBias ? init.bias : null);
        }
        return new Linear(Empty(new[] { outFeatures, inFeatures }, t), hasBias ? Empty(new[] { outFeatures }, t) : null);
    }

    public static Conv2d Conv2d(long inChannels, long outChannels, long kernelSize, long stride = 1, long padding = 0, bool bias = true)
    {
        if (_target is not Target t)
        {
            // torch.nn.Conv2d's initialisation, its parameters in the module that keeps batched sweeps batch-invariant
            var init = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, bias: bias);
            return new Conv2d(init.weight!, bias ? init.bias : null, stride, padding);
        }
        return new Conv2d(Empty(new[] { outChannels, inChannels, kernelSize, kernelSize }, t), bias ? Empty(new[] { outChannels }, t) : null, stride, padding);
    }

    /// <summary>nn.LayerNorm's parameters (weight = 1, bias = 0; uninitialised when loading) in the batch-invariant module.</summary>
    public static LayerNorm LayerNorm(long dim, double eps = 1e-5, bool elementwise_affine = true)
    {
        if (!elementwise_affine) return new LayerNorm(dim, eps, null, null);
        if (_target is Target t) return new LayerNorm(dim, eps, Empty(new[] { dim }, t), Empty(new[] { dim }, t));
        return new LayerNorm(dim, eps, new Parameter(torch.ones(dim), requires_grad: false), new Parameter(torch.zeros(dim), requires_grad: false));
    }

    /// <summary>nn.GroupNorm's parameters (affine: weight = 1, bias = 0 by default, uninitialised when loading) in the batch-invariant module.</summary>
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps, bool affine)
    {
        if (!affine) return new GroupNorm(numGroups, numChannels, eps, null, null);
        if (_target is Target t)
            return new GroupNorm(numGroups, numChannels, eps, Empty(new[] { numChannels }, t), Empty(new[] { numChannels }, t));
        return new GroupNorm(numGroups, numChannels, eps, new Parameter(torch.ones(numChannels), requires_grad: false), new Parameter(torch.zeros(numChannels), requires_grad: false));
    }

    /// <summary>A free parameter: <paramref name="init"/> (a float32 CPU tensor) by default, uninitialised on the target when loading.</summary>
    public static Parameter Parameter(long[] shape, Func<Tensor> init)
    {
        if (_target is Target t) return Empty(shape, t);
        using (torch.no_grad()) return new Parameter(init());
    }

    /// <summary>
    /// Checks that a module built inside <see cref="ForLoading"/> holds every parameter and buffer on the target
    /// device (nothing left on the meta device by a layer built outside these constructors).
    /// </summary>
    public static void CheckMaterialised(nn.Module module, Device device, string component)
    {
        foreach (var (name, p) in module.named_parameters())
            if (p.device_type != device.type)
                throw new InvalidOperationException($"{component}: parameter {name} was built on {p.device_type}, not {device.type} (build it with Layers)");
        foreach (var (name, b) in module.named_buffers())
            if (b.device_type != device.type)
                throw new InvalidOperationException($"{component}: buffer {name} was built on {b.device_type}, not {device.type} (build it with Layers)");
    }
}
