using System.Runtime.InteropServices;
using System.Text;

namespace DiffusionLens.Kernels;

/// <summary>
/// NVRTC, CUDA's run-time compiler, found where PyTorch keeps it: <c>LENS_NVRTC</c> (a file), else beside the loaded
/// torch/lib (the pip wheels' <c>site-packages/nvidia/*/lib</c>), else by soname on the library path, else
/// <c>/usr/local/cuda</c>. Compiles one CUDA source for the GPU in use: a cubin for its architecture, or PTX for the
/// newest architecture this NVRTC knows when it does not know the GPU's.
/// </summary>
internal static unsafe class Nvrtc
{
    private static readonly object Gate = new();
    private static IntPtr _lib;
    private static string? _path;

    /// <summary>The NVRTC library loaded (or the reason none was), for reports.</summary>
    public static string Describe() => _path ?? "not loaded";

    /// <summary>NVRTC's version ("13.0") and library path: part of the kernel cache's key.</summary>
    public static string Version()
    {
        var lib = Load();
        var version = (delegate* unmanaged<int*, int*, int>)NativeLibrary.GetExport(lib, "nvrtcVersion");
        int major, minor;
        return version(&major, &minor) == 0 ? $"{major}.{minor} {_path}" : $"unknown {_path}";
    }

    /// <summary>Compiles <paramref name="source"/> for compute capability <paramref name="capability"/> (e.g. 90): the image to load, and what it is.</summary>
    public static (byte[] Image, string Kind) Compile(string source, string name, int capability)
    {
        var lib = Load();
        var create = (delegate* unmanaged<IntPtr*, byte*, byte*, int, IntPtr, IntPtr, int>)NativeLibrary.GetExport(lib, "nvrtcCreateProgram");
        var compile = (delegate* unmanaged<IntPtr, int, IntPtr*, int>)NativeLibrary.GetExport(lib, "nvrtcCompileProgram");
        var logSize = (delegate* unmanaged<IntPtr, nuint*, int>)NativeLibrary.GetExport(lib, "nvrtcGetProgramLogSize");
        var log = (delegate* unmanaged<IntPtr, byte*, int>)NativeLibrary.GetExport(lib, "nvrtcGetProgramLog");
        var destroy = (delegate* unmanaged<IntPtr*, int>)NativeLibrary.GetExport(lib, "nvrtcDestroyProgram");

        string? firstError = null;
        foreach (var (arch, cubin) in new[] { ($"sm_{capability}", true), ($"compute_{capability}", false), ("compute_90", false), ("compute_80", false) })
        {
            IntPtr prog;
            var src = Encoding.UTF8.GetBytes(source + "\0");
            var file = Encoding.UTF8.GetBytes(name + "\0");
            fixed (byte* s = src, f = file)
            {
                int rc = create(&prog, s, f, 0, IntPtr.Zero, IntPtr.Zero);
                if (rc != 0) throw new InvalidOperationException($"nvrtcCreateProgram failed ({rc})");
            }
            try
            {
                var options = new[] { $"--gpu-architecture={arch}", "-std=c++17", "--fmad=false" }.Select(o => Marshal.StringToHGlobalAnsi(o)).ToArray();
                int rc;
                try
                {
                    fixed (IntPtr* o = options) rc = compile(prog, options.Length, o);
                }
                finally { foreach (var o in options) Marshal.FreeHGlobal(o); }
                if (rc != 0)
                {
                    nuint n;
                    logSize(prog, &n);
                    var text = new byte[(int)n + 1];
                    fixed (byte* t = text) log(prog, t);
                    firstError ??= $"{arch}: NVRTC error {rc}: {Encoding.UTF8.GetString(text).TrimEnd('\0').Trim()}";
                    continue;
                }
                var sizeFn = (delegate* unmanaged<IntPtr, nuint*, int>)NativeLibrary.GetExport(lib, cubin ? "nvrtcGetCUBINSize" : "nvrtcGetPTXSize");
                var getFn = (delegate* unmanaged<IntPtr, byte*, int>)NativeLibrary.GetExport(lib, cubin ? "nvrtcGetCUBIN" : "nvrtcGetPTX");
                nuint size;
                if (sizeFn(prog, &size) != 0) continue;
                var image = new byte[(int)size];
                fixed (byte* i = image) if (getFn(prog, i) != 0) continue;
                return (image, cubin ? $"cubin {arch}" : $"PTX {arch}");
            }
            finally { destroy(&prog); }
        }
        throw new InvalidOperationException($"NVRTC ({_path}) could not compile {name}: {firstError}");
    }

    private static IntPtr Load()
    {
        lock (Gate)
        {
            if (_lib != IntPtr.Zero) return _lib;
            var tried = new List<string>();
            foreach (var candidate in Candidates())
            {
                tried.Add(candidate);
                if (NativeLibrary.TryLoad(candidate, out var handle) && NativeLibrary.TryGetExport(handle, "nvrtcCompileProgram", out _))
                {
                    _lib = handle;
                    _path = candidate;
                    return handle;
                }
            }
            _path = "none found";
            throw new InvalidOperationException("no NVRTC library (libnvrtc) found; tried " + string.Join(", ", tried) +
                                                ". Set LENS_NVRTC to its path, or run with --fused-kernels off");
        }
    }

    private static IEnumerable<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable("LENS_NVRTC") is { Length: > 0 } env) yield return env;
        if (TorchRuntime.LocateTorchLib() is string torchLib)
        {
            foreach (var f in Matches(torchLib)) yield return f;
            var nvidia = Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia"));
            if (Directory.Exists(nvidia))
                foreach (var dir in Directory.GetDirectories(nvidia).OrderByDescending(d => d, StringComparer.Ordinal))
                    foreach (var f in Matches(Path.Combine(dir, "lib"))) yield return f;
        }
        foreach (var soname in new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so" }) yield return soname;
        foreach (var f in Matches("/usr/local/cuda/lib64")) yield return f;
    }

    private static IEnumerable<string> Matches(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        return Directory.GetFiles(dir, "libnvrtc.so*")
            .Where(f => !Path.GetFileName(f).Contains("builtins") && !Path.GetFileName(f).Contains(".alt."))
            .OrderByDescending(f => f.Length).ThenByDescending(f => f, StringComparer.Ordinal);
    }
}
