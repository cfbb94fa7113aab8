using System.Security.Cryptography;
using System.Text;

namespace DiffusionLens.Kernels;

/// <summary>
/// Compiled kernel images on disk, so NVRTC runs once per source, GPU architecture and NVRTC version rather than once
/// per process: <c>$LENS_CACHE_DIR/kernels</c>, else <c>$XDG_CACHE_HOME/diffusion-lens/kernels</c>, else
/// <c>~/.cache/diffusion-lens/kernels</c>; <c>LENS_KERNEL_CACHE=off</c> compiles every time. A cache that cannot be
/// read or written is ignored (the kernels are compiled), never an error; a file is written whole or not at all.
/// </summary>
internal static class KernelCache
{
    /// <summary>The cache folder, or null when disabled.</summary>
    public static string? Folder()
    {
        if (Environment.GetEnvironmentVariable("LENS_KERNEL_CACHE") is "off" or "0") return null;
        static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        var root = Env("LENS_CACHE_DIR")
            ?? Path.Combine(Env("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "diffusion-lens");
        return Path.Combine(root, "kernels");
    }

    /// <summary>The file name for a source compiled for an architecture by a compiler version.</summary>
    public static string Key(string name, string source, int capability, string compiler)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{source}\n{capability}\n{compiler}"));
        return $"{Path.GetFileNameWithoutExtension(name)}-sm{capability}-{Convert.ToHexString(hash)[..16].ToLowerInvariant()}.bin";
    }

    /// <summary>The cached image and its kind ("cubin sm_90", "PTX compute_90"), or null.</summary>
    public static (byte[] Image, string Kind)? Read(string key, string? folder = null)
    {
        try
        {
            if ((folder ?? Folder()) is not string dir) return null;
            var path = Path.Combine(dir, key);
            var kindPath = path + ".kind";
            if (!File.Exists(path) || !File.Exists(kindPath)) return null;
            var kind = File.ReadAllText(kindPath).Trim();
            var image = File.ReadAllBytes(path);
            return image.Length > 0 && kind.Length > 0 ? (image, kind) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Remembers an image under <paramref name="key"/> (in <paramref name="folder"/>, else <see cref="Folder"/>).</summary>
    public static void Write(string key, byte[] image, string kind, string? folder = null)
    {
        try
        {
            if ((folder ?? Folder()) is not string dir) return;
            Directory.CreateDirectory(dir);
            var path = Path.Combine(dir, key);
            var tmp = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllText(tmp + ".kind", kind);
            File.Move(tmp + ".kind", path + ".kind", overwrite: true);
            File.WriteAllBytes(tmp, image);
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* not remembered, still right */ }
    }
}
