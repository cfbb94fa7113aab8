using System.Diagnostics;

namespace DiffusionLens.Testing;

/// <summary>The GPU a CUDA test ran on (nvidia-smi: name, driver, memory), read once; TorchSharp has no device query.</summary>
public static class GpuInfo
{
    private static readonly Lazy<string> _describe = new(Query);
    /// <summary>"NAME (driver X, MEMORY)" of the first GPU nvidia-smi lists, or a phrase saying it could not be read.</summary>
    public static string Describe() => _describe.Value;

    private static string Query()
    {
        try
        {
            var psi = new ProcessStartInfo("nvidia-smi", "--query-gpu=name,driver_version,memory.total --format=csv,noheader")
            { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            var text = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(10_000);
            var first = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault()?.Trim();
            if (string.IsNullOrEmpty(first)) return "a CUDA GPU (nvidia-smi printed nothing)";
            var parts = first.Split(',', StringSplitOptions.TrimEntries);
            return parts.Length >= 3 ? $"{parts[0]} (driver {parts[1]}, {parts[2]})" : first;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return "a CUDA GPU (nvidia-smi not found)";
        }
    }
}
