using System.Runtime.InteropServices;

namespace DiffusionLens.Judge;

/// <summary>
/// Puts the CUDA libraries that ONNX Runtime's CUDA execution provider links against (cudart, cuBLAS/cuBLASLt, cuRAND,
/// cuFFT, cuDNN) in the process before the provider loads, from an installed PyTorch's pip CUDA packages when the
/// system's library path has none: the provider's by-name needs then resolve to the already loaded libraries (the
/// dynamic linker matches loaded sonames), as <see cref="TorchRuntime"/> does for libtorch. Folders, in order:
/// <c>LENS_CUDA_LIBS</c> (colon-separated), then the <c>nvidia/*/lib</c> folders beside PyTorch's <c>torch/lib</c>
/// (<c>LENS_TORCH_LIB</c>, else python3's torch). Nothing is done where the libraries load by name already.
/// </summary>
internal static class OnnxCudaLibraries
{
    // the order of their mutual needs: the runtime first, cuBLASLt before cuBLAS, cuDNN's sub-libraries load themselves
    private static readonly string[] Stems = ["libcudart.so", "libcublasLt.so", "libcublas.so", "libcurand.so", "libcufft.so", "libcudnn.so"];
    private static readonly object Gate = new();
    private static string? _source;

    /// <summary>Where the CUDA libraries came from ("system library path", folders), after <see cref="Preload"/>.</summary>
    public static string Source => _source ?? "not initialised";

    /// <summary>Idempotent; returns <see cref="Source"/>.</summary>
    public static string Preload()
    {
        lock (Gate)
        {
            if (_source is not null) return _source;
            if (!OperatingSystem.IsLinux()) return _source = "system library path (not Linux)";
            if (LoadsByName()) return _source = "system library path";
            var loaded = new List<string>();
            foreach (var dir in Folders())
                foreach (var stem in Stems)
                    foreach (var file in Directory.EnumerateFiles(dir, stem + ".*").Where(IsSoname).Order(StringComparer.Ordinal))
                        if (NativeLibrary.TryLoad(file, out _)) loaded.Add(file);
            return _source = loaded.Count == 0
                ? "none found (set LENS_CUDA_LIBS to the folders holding libcudart/libcublas/libcudnn, or install PyTorch with CUDA)"
                : string.Join(", ", loaded.Select(Path.GetDirectoryName).Distinct());
        }
    }

    /// <summary>lib*.so.N (one version number): the name the provider asks for, not a fully versioned file.</summary>
    private static bool IsSoname(string path)
    {
        var name = Path.GetFileName(path);
        int so = name.IndexOf(".so.", StringComparison.Ordinal);
        return so > 0 && name[(so + 4)..].All(char.IsAsciiDigit) && name.Length > so + 4;
    }

    private static bool LoadsByName()
    {
        // what the CUDA 13 (ORT 1.31) or CUDA 12 builds of the provider link against
        foreach (var major in new[] { 13, 12 })
            if (new[] { $"libcudart.so.{major}", $"libcublasLt.so.{major}", $"libcublas.so.{major}", "libcurand.so.10", "libcudnn.so.9" }
                .All(n => NativeLibrary.TryLoad(n, out _))) return true;
        return false;
    }

    private static IEnumerable<string> Folders()
    {
        var env = Environment.GetEnvironmentVariable("LENS_CUDA_LIBS");
        if (!string.IsNullOrEmpty(env))
            foreach (var d in env.Split(':', StringSplitOptions.RemoveEmptyEntries))
                if (Directory.Exists(d)) yield return d;
        var torchLib = TorchRuntime.LocateTorchLib();
        if (torchLib is null) yield break;
        // site-packages/torch/lib -> site-packages/nvidia/<package>/lib (cu12 wheels) or nvidia/cu13/lib (cu13 wheels)
        var nvidia = Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia"));
        if (!Directory.Exists(nvidia)) yield break;
        foreach (var pkg in Directory.EnumerateDirectories(nvidia).Order(StringComparer.Ordinal))
        {
            var lib = Path.Combine(pkg, "lib");
            if (Directory.Exists(lib)) yield return lib;
        }
    }
}
