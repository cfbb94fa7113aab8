using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DiffusionLens;

/// <summary>
/// Finds the native libtorch when this build carries none (built with <c>-p:TorchBackend=managed</c>, the managed-only
/// TorchSharp package): PyTorch's own <c>torch/lib</c>, from <c>LENS_TORCH_LIB</c>, else from the <c>python3</c> on the PATH.
/// Its libraries are loaded by full path before TorchSharp initialises, so TorchSharp's by-name loads resolve to them
/// (the dynamic linker matches already-loaded sonames) and no <c>LD_LIBRARY_PATH</c> is needed; PyTorch's libraries find
/// their CUDA dependencies through their own RPATHs. Nothing is done where a libtorch ships beside the app (the CPU or
/// CUDA TorchSharp packages).
/// </summary>
public static class TorchRuntime
{
    private static readonly object Gate = new();
    private static bool _done;

    /// <summary>Where libtorch was loaded from ("bundled", a torch/lib folder), or why none was preloaded.</summary>
    public static string Source { get; private set; } = "not initialised";

    /// <summary>PyTorch's torch/lib folder this process loaded libtorch from; null where libtorch is bundled or none was found.</summary>
    public static string? TorchLibFolder { get; private set; }

#pragma warning disable CA2255 // a library module initializer: libtorch must be in place before any TorchSharp call
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => Preload();

    /// <summary>Idempotent; call before the first TorchSharp call of a process (the library and the test apps do).</summary>
    public static void Preload()
    {
        lock (Gate)
        {
            if (_done) return;
            _done = true;
            if (OperatingSystem.IsLinux()) ConfigureCudaAllocator();
            try { PreloadLibTorch(); }
            finally { if (OperatingSystem.IsLinux()) ConfigureCpuKernels(); }
        }
    }

    private static void PreloadLibTorch()
    {
        {
            if (!OperatingSystem.IsLinux()) { Source = "bundled (not Linux)"; return; }
            if (BundledLibTorch() is string bundled) { Source = $"bundled ({bundled})"; return; }
            var (dir, origin) = FindTorchLib();
            if (string.IsNullOrEmpty(dir) || !File.Exists(Path.Combine(dir, "libtorch.so")))
            {
                Source = $"none: this build carries no libtorch and {origin} gave none{(string.IsNullOrEmpty(dir) ? "" : $" ({dir} has no libtorch.so)")}";
                return;
            }
            // CUDA first (it pulls in libtorch_cpu, c10 and the CUDA libraries through its RPATH), then the umbrella library
            foreach (var lib in new[] { "libtorch_cuda.so", "libtorch.so" })
            {
                var path = Path.Combine(dir, lib);
                if (File.Exists(path)) NativeLibrary.TryLoad(path, out _);
            }
            TorchLibFolder = dir;
            Source = $"{dir} ({origin})";
        }
    }

    /// <summary>PyTorch's torch/lib folder (<c>LENS_TORCH_LIB</c>, else python3's torch), loaded or not; null when none.</summary>
    public static string? LocateTorchLib()
    {
        if (TorchLibFolder is not null) return TorchLibFolder;
        var (dir, _) = FindTorchLib();
        return !string.IsNullOrEmpty(dir) && Directory.Exists(dir) ? dir : null;
    }

    /// <summary>torch/lib from <c>LENS_TORCH_LIB</c>, else from the python3 on the PATH; and which of the two it was.</summary>
    private static (string? Dir, string Origin) FindTorchLib()
    {
        var dir = Environment.GetEnvironmentVariable("LENS_TORCH_LIB");
        return string.IsNullOrEmpty(dir) ? (FromPython(), "python3's torch") : (dir, "LENS_TORCH_LIB");
    }

    /// <summary>
    /// The CUDA caching allocator's settings this process runs with (<c>PYTORCH_CUDA_ALLOC_CONF</c>): the user's when set
    /// (even empty), else <c>expandable_segments:True</c>, set here before libtorch reads it.
    /// </summary>
    public static string CudaAllocConf { get; private set; } = "not set";

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv(string name, string value, int overwrite);

    [DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr GetEnv(string name);

    /// <summary>
    /// Expandable segments for PyTorch's CUDA caching allocator unless the user chose settings: a sweep allocates
    /// activations of several batch sizes (warm-up, batches, the VAE decode of a batch), and with fixed-size segments
    /// the freed blocks of one size fragment into memory the driver still counts as used (on an H200, SD 1.5 at 24 rows:
    /// the peak above diffusers'). Memory layout only: no result changes. The native environment is written (libtorch
    /// reads it with getenv, which .NET's Environment.SetEnvironmentVariable does not reach on Linux).
    /// </summary>
    private static void ConfigureCudaAllocator()
    {
        const string Name = "PYTORCH_CUDA_ALLOC_CONF";
        try
        {
            var current = GetEnv(Name);
            if (current != IntPtr.Zero)
            {
                var value = Marshal.PtrToStringUTF8(current);
                CudaAllocConf = string.IsNullOrEmpty(value) ? $"default ({Name} set empty)" : $"{value} ({Name})";
                return;
            }
            CudaAllocConf = SetEnv(Name, "expandable_segments:True", 0) == 0 ? "expandable_segments:True" : "default (setenv failed)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            CudaAllocConf = $"default ({e.GetType().Name})";
        }
    }

    /// <summary>
    /// Whether libtorch's oneDNN (mkldnn) CPU kernels are in use: "off" (the default here), "on" (<c>LENS_CPU_ONEDNN=1</c>)
    /// or why it could not be switched.
    /// </summary>
    public static string CpuOneDnn { get; private set; } = "not set";

    /// <summary>
    /// Turns libtorch's oneDNN CPU kernels off (<c>at::globalContext().setUserEnabledMkldnn(false)</c>, what
    /// <c>torch.backends.mkldnn.enabled = False</c> does): on an AMD EPYC host libtorch 2.10's oneDNN float32
    /// convolution returned wrong values for a batch of two 24-channel 24x24 maps (max error 0.4 against float64 and
    /// against PyTorch on another CPU; batch 1 and the native kernels were exact), so CPU results would depend on the
    /// CPU model. <c>LENS_CPU_ONEDNN=1</c> keeps oneDNN (faster CPU convolutions). CUDA is not affected.
    /// </summary>
    internal static unsafe void ConfigureCpuKernels()
    {
        if (Environment.GetEnvironmentVariable("LENS_CPU_ONEDNN") == "1") { CpuOneDnn = "on (LENS_CPU_ONEDNN=1)"; return; }
        try
        {
            var lib = NativeLibrary.Load("libtorch_cpu.so", typeof(TorchSharp.torch).Assembly, null);
            if (NativeLibrary.TryGetExport(lib, "_ZN2at13globalContextEv", out var context)
                && NativeLibrary.TryGetExport(lib, "_ZN2at7Context20setUserEnabledMkldnnEb", out var set))
            {
                var ctx = ((delegate* unmanaged<IntPtr>)context)();
                ((delegate* unmanaged<IntPtr, byte, void>)set)(ctx, 0);
                CpuOneDnn = "off";
            }
            else CpuOneDnn = "unchanged (libtorch_cpu exports no setUserEnabledMkldnn)";
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
        {
            CpuOneDnn = $"unchanged ({e.GetType().Name})";
        }
    }

    private static string? BundledLibTorch()
    {
        var baseDir = AppContext.BaseDirectory;
        foreach (var d in new[] { baseDir, Path.Combine(baseDir, "runtimes", "linux-x64", "native"), Path.Combine(baseDir, "runtimes", "linux-arm64", "native") })
            if (File.Exists(Path.Combine(d, "libtorch.so")) || File.Exists(Path.Combine(d, "libtorch_cpu.so"))) return d;
        return null;
    }

    private static string? FromPython()
    {
        try
        {
            var psi = new ProcessStartInfo("python3", "-c \"import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\"")
            { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi);
            if (p is null) return null;
            var stdout = p.StandardOutput.ReadToEndAsync();
            p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(60_000)) { try { p.Kill(); } catch (InvalidOperationException) { } return null; }
            return p.ExitCode == 0 ? stdout.Result.Trim() : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return null;
        }
    }
}
