using System.Reflection;
using System.Runtime.InteropServices;
using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Kernels;

/// <summary>
/// GroupNorm fused with what follows it in diffusers' blocks, and the residual sum fused with the convolution biases
/// before it (<c>group_norm.cu</c>, compiled by <see cref="Nvrtc"/> on first use for the GPU in use): one pass where
/// PyTorch's ops make three to five (issue #11). Batch-invariant by construction: one thread block per (row, group)
/// for the statistics, summed in one order whatever the layout, alignment or batch, and element-wise passes.
/// <para><c>--fused-kernels auto</c> (the default) uses them for float16 and bfloat16 tensors on CUDA, where diffusers'
/// own results are rounded at every op and the fused ones are rounded once (closer to float32: <c>ci/fused_kernels.py</c>);
/// <c>on</c> also for float32 on CUDA, <c>off</c> never. Without NVRTC, <c>auto</c> falls back to libtorch's ops and
/// <see cref="Describe"/> says why; <c>on</c> fails.</para>
/// </summary>
internal static class FusedKernels
{
    public enum Mode { Auto, On, Off }

    /// <summary>Activation codes of <c>group_norm.cu</c>.</summary>
    public enum Activation { None = 0, Silu = 1, Gelu = 2, GeluTanh = 3, Mish = 4, Relu = 5 }

    private static readonly object Gate = new();
    private static readonly Dictionary<int, Device> Devices = new();
    private static Mode? _scoped;
    private static string? _failure;
    [ThreadStatic] private static int _launches;

    [DllImport("LibTorchSharp")] private static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>The mode in force: a <see cref="Use"/> scope's, else <c>LENS_FUSED_KERNELS</c>'s, else auto.</summary>
    public static Mode Current => _scoped ?? Parse(Environment.GetEnvironmentVariable("LENS_FUSED_KERNELS"), "LENS_FUSED_KERNELS") ?? Mode.Auto;

    /// <summary>auto|on|off (case-insensitive); null for null or empty; a clear error naming <paramref name="what"/> otherwise.</summary>
    public static Mode? Parse(string? value, string what) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" => null,
        "auto" => Mode.Auto,
        "on" => Mode.On,
        "off" => Mode.Off,
        _ => throw new LensException($"{what} must be auto, on or off (got '{value}')"),
    };

    /// <summary>Sets the mode until disposed.</summary>
    public static IDisposable Use(Mode mode)
    {
        var previous = _scoped;
        _scoped = mode;
        return new Restore(() => _scoped = previous);
    }

    /// <summary>How many fused launches this thread made so far (tests use it; sweeps on other threads do not count).</summary>
    public static int Launches => _launches;

    /// <summary>For a report: the mode, and where the kernels came from or why they are not used.</summary>
    public static string Describe()
    {
        var mode = Current.ToString().ToLowerInvariant();
        lock (Gate)
        {
            if (_failure is not null) return $"{mode}: unavailable ({_failure})";
            if (Devices.Count == 0) return $"{mode}: not compiled (no CUDA tensor reached them)";
            var d = Devices.First().Value;
            return $"{mode}: {d.Kind} from NVRTC {Nvrtc.Describe()}";
        }
    }

    /// <summary>The activation code for a diffusers activation name, or null when the kernels have none.</summary>
    public static Activation? ActivationOf(string name) => name.ToLowerInvariant() switch
    {
        "silu" or "swish" => Activation.Silu,
        "gelu" => Activation.Gelu,
        "mish" => Activation.Mish,
        "relu" => Activation.Relu,
        _ => null,
    };

    /// <summary>Whether the fused kernels run on <paramref name="x"/> under the current mode (compiling them on first use).</summary>
    public static bool Applies(Tensor x)
    {
        if (x.device_type != DeviceType.CUDA) return false;
        var mode = Current;
        if (mode == Mode.Off) return false;
        bool half = x.dtype is ScalarType.Float16 or ScalarType.BFloat16;
        if (!half && !(mode == Mode.On && x.dtype == ScalarType.Float32)) return false;
        return DeviceFor(x.device_index, mode) is not null;
    }

    /// <summary>
    /// act(group_norm(x + biasIn) * (1 + scaleShift[:, :C]) + scaleShift[:, C:2C]) for x [N, C, ...] channels-first or
    /// channels-last (the result has x's layout); biasIn [C] or [N, C]; scaleShift [N, >= 2C, (1, 1)]. Call only where
    /// <see cref="Applies"/> is true.
    /// </summary>
    public static Tensor GroupNorm(Tensor x, long groups, Tensor? weight, Tensor? bias, double eps,
        Activation act = Activation.None, Tensor? scaleShift = null, Tensor? biasIn = null)
    {
        if (x.ndim < 2) throw new ArgumentException($"GroupNorm needs [N, C, ...], got [{string.Join(", ", x.shape)}]");
        long n = x.shape[0], c = x.shape[1];
        if (groups < 1 || c % groups != 0) throw new ArgumentException($"GroupNorm: {c} channels do not split into {groups} groups");
        using var scope = NewDisposeScope();
        var (xs, nhwc) = Layout(x);
        long hw = n * c == 0 ? 0 : xs.numel() / (n * c);
        var dev = DeviceFor(xs.device_index, Current)!;
        var sfx = Suffix(xs.dtype);
        var w = Same(weight, xs, c, "weight");
        var b = Same(bias, xs, c, "bias");
        Tensor? bi = null;
        long biasStride = 0;
        if (biasIn is not null)
        {
            bi = biasIn.to(xs.dtype).contiguous();
            if (bi.numel() == c) { bi = bi.reshape(c); biasStride = 0; }
            else if (bi.numel() == n * c) { bi = bi.reshape(n, c); biasStride = c; }
            else throw new ArgumentException($"GroupNorm input bias must be [{c}] or [{n}, {c}], got [{string.Join(", ", biasIn.shape)}]");
        }
        Tensor? ss = null;
        long ssStride = 0;
        if (scaleShift is not null)
        {
            ss = scaleShift.to(xs.dtype).reshape(n, -1).contiguous();
            if (ss.shape[1] < 2 * c) throw new ArgumentException($"GroupNorm scale-shift must be [{n}, >= {2 * c}], got [{string.Join(", ", scaleShift.shape)}]");
            ssStride = ss.stride(0);
        }
        var y = torch.empty_like(xs);
        if (xs.numel() == 0) return y.MoveToOuterDisposeScope();
        var stats = torch.empty(n * groups * 2, dtype: ScalarType.Float32, device: xs.device);
        CudaDriver.MakeCurrent(dev.Context);
        CudaDriver.Launch(dev.Fn($"gn_stats_{sfx}"), n * groups, 512,
            [Ptr(xs), Ptr(stats), Ptr(bi), biasStride, c, groups, hw, nhwc ? 1 : 0, Float(eps)]);
        long total = xs.numel();
        CudaDriver.Launch(dev.Fn($"gn_apply_{sfx}"), Blocks(total, xs), 256,
            [Ptr(xs), Ptr(y), Ptr(stats), Ptr(bi), biasStride, Ptr(w), Ptr(b), Ptr(ss), ssStride, c, groups, hw, total, nhwc ? 1 : 0, (long)act]);
        _launches += 2;
        if (Models.BatchInvariance.Trace)
            Models.BatchInvariance.TraceAgainstLayerCopies(Traced("GroupNorm", x), y, n, (i, u) => GroupNorm(Models.BatchInvariance.RowsCopy(x, i, u, n),
                groups, weight, bias, eps, act, scaleShift is null ? null : Models.BatchInvariance.RowsCopy(scaleShift, i, u, n),
                biasIn is null ? null : Models.BatchInvariance.RowsCopy(biasIn, i, u, n)));
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>(a + biasA[c] + r + biasR[c]) / scale, in a's layout (r is brought to it); each bias optional.</summary>
    public static Tensor Residual(Tensor a, Tensor? biasA, Tensor r, Tensor? biasR, double scale)
    {
        if (!a.shape.SequenceEqual(r.shape))
            throw new ArgumentException($"residual shapes differ: [{string.Join(", ", a.shape)}] and [{string.Join(", ", r.shape)}]");
        using var scope = NewDisposeScope();
        var (xa, nhwc) = Layout(a);
        var xr = r.to(xa.dtype);
        xr = nhwc ? (IsChannelsLast(xr) ? xr : ToChannelsLast(xr)) : xr.contiguous();
        long n = xa.shape[0], c = xa.ndim > 1 ? xa.shape[1] : 1;
        long hw = n * c == 0 ? 0 : xa.numel() / (n * c);
        var dev = DeviceFor(xa.device_index, Current)!;
        var y = torch.empty_like(xa);
        if (xa.numel() == 0) return y.MoveToOuterDisposeScope();
        var ba = Same(biasA, xa, c, "bias");
        var br = Same(biasR, xa, c, "shortcut bias");
        CudaDriver.MakeCurrent(dev.Context);
        long total = xa.numel();
        CudaDriver.Launch(dev.Fn($"add_residual_{Suffix(xa.dtype)}"), Blocks(total, xa), 256,
            [Ptr(xa), Ptr(ba), Ptr(xr), Ptr(br), Ptr(y), c, hw, total, nhwc ? 1 : 0, Float(scale)]);
        _launches++;
        if (Models.BatchInvariance.Trace)
            Models.BatchInvariance.TraceAgainstLayerCopies(Traced("Residual", a), y, n, (i, u) =>
                Residual(Models.BatchInvariance.RowsCopy(a, i, u, n), biasA, Models.BatchInvariance.RowsCopy(r, i, u, n), biasR, scale));
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>How a traced fused launch is named: the kernel, the input's shape and strides.</summary>
    private static string Traced(string kernel, Tensor x) => $"fused {kernel} [{string.Join("x", x.shape)}] (strides {string.Join(",", x.stride())})";

    /// <summary>Whether x [N, C, ...] is dense channels-last: C innermost, then the spatial dimensions in order (size-1 dimensions ignored).</summary>
    public static bool IsChannelsLast(Tensor x)
    {
        if (x.ndim < 3) return false;
        var order = new List<int> { 1 };
        for (int d = (int)x.ndim - 1; d >= 2; d--) order.Add(d);
        order.Add(0);
        long expected = 1;
        foreach (var d in order)
        {
            long size = x.shape[d];
            if (size != 1 && x.stride(d) != expected) return false;
            expected *= size;
        }
        return true;
    }

    /// <summary>A channels-last copy of x [N, C, ...].</summary>
    public static Tensor ToChannelsLast(Tensor x)
    {
        var toLast = new long[x.ndim];
        toLast[0] = 0;
        for (int d = 2; d < x.ndim; d++) toLast[d - 1] = d;
        toLast[x.ndim - 1] = 1;
        var back = new long[x.ndim];
        for (int i = 0; i < toLast.Length; i++) back[toLast[i]] = i;
        return x.permute(toLast).contiguous().permute(back);
    }

    private static (Tensor X, bool Nhwc) Layout(Tensor x)
    {
        if (x.is_contiguous()) return (x, false);
        if (IsChannelsLast(x)) return (x, true);
        return (x.contiguous(), false);
    }

    private static Tensor? Same(Tensor? t, Tensor like, long c, string what)
    {
        if (t is null) return null;
        if (t.numel() != c) throw new ArgumentException($"{what} must have {c} values, got [{string.Join(", ", t.shape)}]");
        return t.dtype == like.dtype && t.is_contiguous() ? t : t.to(like.dtype).contiguous();
    }

    private static long Blocks(long total, Tensor x)
    {
        long width = x.element_size() == 2 ? 8 : 1;
        return Math.Max(1, Math.Min((total / width + 255) / 256, int.MaxValue));
    }

    private static long Ptr(Tensor? t) => t is null ? 0 : (long)THSTensor_data(t.Handle);

    private static long Float(double v) => BitConverter.SingleToInt32Bits((float)v);

    private static string Suffix(ScalarType t) => t switch
    {
        ScalarType.Float16 => "f16",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float32 => "f32",
        _ => throw new ArgumentException($"the fused kernels take float16, bfloat16 or float32, not {t}"),
    };

    private static Device? DeviceFor(int ordinal, Mode mode)
    {
        lock (Gate)
        {
            if (Devices.TryGetValue(ordinal, out var d)) return d;
            if (_failure is not null)
            {
                if (mode == Mode.On) throw new LensException($"--fused-kernels on: the fused kernels are unavailable: {_failure}");
                return null;
            }
            try
            {
                d = new Device(Math.Max(0, ordinal));
                Devices[ordinal] = d;
                return d;
            }
            catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                _failure = e.Message;
                if (mode == Mode.On) throw new LensException($"--fused-kernels on: the fused kernels are unavailable: {_failure}");
                return null;
            }
        }
    }

    private static string Source()
    {
        using var s = Assembly.GetExecutingAssembly().GetManifestResourceStream("DiffusionLens.Kernels.group_norm.cu")
            ?? throw new InvalidOperationException("the kernel source group_norm.cu is not embedded in this build");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    private sealed class Device
    {
        public IntPtr Context { get; }
        public string Kind { get; }
        private readonly IntPtr _module;
        private readonly Dictionary<string, IntPtr> _fns = new();

        public Device(int ordinal)
        {
            var (context, capability) = CudaDriver.PrimaryContext(ordinal);
            Context = context;
            var source = Source();
            var key = KernelCache.Key("group_norm.cu", source, capability, Nvrtc.Version());
            CudaDriver.MakeCurrent(context);
            IntPtr module = IntPtr.Zero;
            string? kindUsed = null;
            if (KernelCache.Read(key) is var (cachedImage, cachedKind))
            {
                try { module = Load(cachedImage, cachedKind); kindUsed = $"{cachedKind} (cached)"; }
                catch (InvalidOperationException) { module = IntPtr.Zero; } // a damaged cache file: compiled again below
            }
            if (module == IntPtr.Zero)
            {
                var (image, kind) = Nvrtc.Compile(source, "group_norm.cu", capability);
                module = Load(image, kind);
                KernelCache.Write(key, image, kind);
                kindUsed = kind;
            }
            _module = module;
            Kind = kindUsed!;
            foreach (var k in new[] { "gn_stats", "gn_apply", "add_residual" })
                foreach (var s in new[] { "f16", "bf16", "f32" })
                    _fns[$"{k}_{s}"] = CudaDriver.Function(_module, $"{k}_{s}");
        }

        public IntPtr Fn(string name) => _fns[name];

        private static IntPtr Load(byte[] image, string kind) =>
            CudaDriver.LoadModule(kind.StartsWith("PTX", StringComparison.Ordinal) ? [.. image, 0] : image);
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }
}
