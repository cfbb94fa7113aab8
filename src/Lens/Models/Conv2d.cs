using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// torch.nn.Conv2d (keys weight [out, in, k, k], bias [out]; zero padding, no dilation or groups) computed by
/// <c>conv2d</c> exactly as PyTorch's module, kept batch-invariant inside a batch of layers
/// (<see cref="BatchInvariance"/>): cuDNN picks its algorithm by shape, and some pick another one for 24 rows than for
/// 2, which gives a row other numbers (<c>ci/batch_invariance.py</c>); such shapes then run in canonical calls, padded
/// (<c>ci/conv_canonical.py</c>).
/// <para>Weight layout: cuDNN runs a 16-bit channels-first convolution as an NHWC kernel between conversions of the
/// input, the weight and the output, the weight's every call. Where the weight holds more values than
/// <see cref="ChannelsLastWeightRows"/> rows of the input (the low resolutions of a UNet: IF-I-XL's 2048x4096x3x3
/// weights at 8x8) the weight is stored channels-last once, on its first such call, and the output made channels-first
/// again: the same NHWC kernel without the weight's conversion (<c>ci/conv_weight_layout.py</c>: the same numbers for
/// those shapes; slower where the activations are large, which keep the default). CUDA, 16-bit types, kernels larger
/// than 1x1; <c>LENS_CONV_WEIGHT_LAYOUT=off</c> turns it off.</para>
/// </summary>
internal sealed class Conv2d : nn.Module<Tensor, Tensor>, IBatchInvariant
{
#pragma warning disable IDE1006 // state-dict names
    public Parameter weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    private readonly long[] _stride;
    private readonly long[] _padding;
    private readonly Func<Tensor, Tensor> _withBias, _withoutBias; // made once (every step calls them)

    /// <summary>Per input shape: how this convolution gives each layer the canonical call's numbers (<see cref="BatchInvariance"/>).</summary>
    public BatchInvariance.Decisions Invariance { get; } = new("Conv2d");

    public long InChannels => weight.shape[1];
    public long OutChannels => weight.shape[0];

    public Conv2d(Parameter weight, Parameter? bias, long stride, long padding) : base(nameof(Conv2d))
    {
        if (weight.ndim != 4) throw new ArgumentException($"Conv2d weight must be [out, in, kH, kW], got [{string.Join(", ", weight.shape)}]");
        if (bias is not null && (bias.ndim != 1 || bias.shape[0] != weight.shape[0]))
            throw new ArgumentException($"Conv2d bias must be [{weight.shape[0]}], got [{string.Join(", ", bias.shape)}]");
        this.weight = weight;
        this.bias = bias;
        _stride = new[] { stride, stride };
        _padding = new[] { padding, padding };
        _withBias = x => Conv(x, this.bias);
        _withoutBias = x => Conv(x, null);
        RegisterComponents();
    }

    /// <summary>
    /// The weight is stored channels-last where it holds more values than this many rows of the input (a fixed count, so
    /// a shape gets one layout at every batch; a call of the sweep's 12 layers has 24 rows).
    /// </summary>
    public const long ChannelsLastWeightRows = 24;

    private static readonly bool ChannelsLastWeights =
        !string.Equals(Environment.GetEnvironmentVariable("LENS_CONV_WEIGHT_LAYOUT"), "off", StringComparison.OrdinalIgnoreCase);

    private readonly object _layoutLock = new();
    private volatile bool _weightChannelsLast;

    /// <summary>Whether a call chose the channels-last weight (the weight is then stored so, where it was channels-first).</summary>
    public bool WeightChannelsLast => _weightChannelsLast;

    /// <summary>Whether a call on <paramref name="x"/> runs with the weight channels-last (see the class summary).</summary>
    private bool WantsChannelsLastWeight(Tensor x)
    {
        if (!ChannelsLastWeights) return false;
        var xs = x.shape;
        long rowValues = xs.Length == 4 ? xs[1] * xs[2] * xs[3] : -1;
        long decided = Interlocked.Read(ref _decided); // one input shape per module in a UNet: decided once, not per call
        if (decided >> 1 == rowValues) return (decided & 1) == 1;
        bool wants = ChannelsLastWeightFor(weight.shape, xs, weight.device_type, weight.dtype);
        Interlocked.Exchange(ref _decided, (rowValues << 1) | (wants ? 1L : 0L));
        return wants;
    }

    private long _decided = -4; // (the input's values per row << 1) | the decision, in one word for other threads

    /// <summary>
    /// The layout rule: a weight [out, in, kH, kW] larger than 1x1, on CUDA in a 16-bit type, holding more values than
    /// <see cref="ChannelsLastWeightRows"/> rows of the input [N, C, H, W].
    /// </summary>
    public static bool ChannelsLastWeightFor(long[] weightShape, long[] inputShape, DeviceType device, ScalarType dtype) =>
        weightShape.Length == 4 && inputShape.Length == 4 && weightShape[2] * weightShape[3] > 1 && device == DeviceType.CUDA
        && (dtype == ScalarType.Float16 || dtype == ScalarType.BFloat16)
        && weightShape.Aggregate(1L, (a, b) => a * b) > ChannelsLastWeightRows * inputShape[1] * inputShape[2] * inputShape[3];

    private Tensor Conv(Tensor x, Tensor? b)
    {
        if (WantsChannelsLastWeight(x))
        {
            if (!_weightChannelsLast) StoreWeightChannelsLast();
            using var output = nn.functional.conv2d(x, weight, b, _stride, _padding); // NHWC out of cuDNN
            return output.contiguous();
        }
        if (!_weightChannelsLast) return nn.functional.conv2d(x, weight, b, _stride, _padding);
        using var w = weight.contiguous(); // another input shape of a module whose weight went channels-last
        return nn.functional.conv2d(x, w, b, _stride, _padding);
    }

    /// <summary>The weight made channels-last in place (<see cref="ToChannelsLastInPlace"/>), once.</summary>
    private void StoreWeightChannelsLast()
    {
        lock (_layoutLock)
        {
            if (_weightChannelsLast) return;
            if (weight.is_contiguous()) ToChannelsLastInPlace(weight); // else left as it is (cuDNN converts it per call)
            _weightChannelsLast = true;
        }
    }

    /// <summary>
    /// A 4-d tensor rewritten channels-last within its own storage: a channels-last copy
    /// (<see cref="Kernels.FusedKernels.ToChannelsLast"/>) written back over the same memory with the copy's strides,
    /// which the tensor then takes. No memory is added (the loaded weights are views of one buffer per file, which a new
    /// allocation per weight would leave in place beside it).
    /// </summary>
    public static void ToChannelsLastInPlace(Tensor w)
    {
        if (w.ndim != 4) throw new ArgumentException($"expected a 4-d tensor, got [{string.Join(", ", w.shape)}]");
        if (!w.is_contiguous()) throw new ArgumentException("expected a channels-first (contiguous) tensor");
        using (torch.no_grad())
        {
            using var copy = Kernels.FusedKernels.ToChannelsLast(w); // a temporary
            using var last = w.as_strided(w.shape, copy.stride(), w.storage_offset());
            last.copy_(copy);
            w.set_(last);
        }
    }

    /// <summary>How many convolutions under <paramref name="roots"/> chose the channels-last weight (for the manifest).</summary>
    public static int CountChannelsLast(IEnumerable<nn.Module> roots) =>
        roots.Sum(r => r.named_modules().Count(m => m.module is Conv2d { WeightChannelsLast: true }));

    public override Tensor forward(Tensor input) => BatchInvariance.Run(input, Invariance, _withBias);

    /// <summary>The convolution without its bias, for a fused kernel that adds <see cref="bias"/> later.</summary>
    public Tensor ForwardWithoutBias(Tensor input) => BatchInvariance.Run(input, Invariance, _withoutBias);
}
