using System.Security.Cryptography;
using System.Text.Json;

namespace DiffusionLens.Loading;

/// <summary>
/// The sha256 of weights files, remembered between runs by file: a file whose full path, length, last-write time and
/// change/creation time are those recorded is not read again (as git's index trusts a file's stat data). A sweep
/// records the hashes of the weights it ran in its manifest; hashing DeepFloyd IF's ~18 GB takes about nine seconds,
/// longer than a short sweep, so without this every run of the same model paid it again.
/// Stored as JSON in <c>$LENS_CACHE_DIR</c>, else <c>$XDG_CACHE_HOME/diffusion-lens</c>, else
/// <c>~/.cache/diffusion-lens</c> (file <c>weight-sha256.json</c>); <c>LENS_HASH_CACHE=off</c> hashes every time.
/// A cache that cannot be read or written is ignored (the hash is computed), never an error.
/// </summary>
internal sealed class WeightHashCache
{
    private sealed record Entry(long Length, long WriteTicks, long ChangeTicks, string Sha256);

    private readonly string? _file;
    private readonly object _gate = new();
    private Dictionary<string, Entry>? _entries;

    /// <summary>Files actually read and hashed by this instance (the others came from the cache).</summary>
    public int Computed { get; private set; }

    /// <param name="folder">where weight-sha256.json lives; null: no cache</param>
    public WeightHashCache(string? folder) => _file = folder is null ? null : Path.Combine(folder, "weight-sha256.json");

    /// <summary>The process-wide cache at the folder the environment names (see the class summary).</summary>
    public static WeightHashCache Default { get; } = new(DefaultFolder());

    private static string? DefaultFolder()
    {
        if (Environment.GetEnvironmentVariable("LENS_HASH_CACHE") is "off" or "0") return null;
        static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        return Env("LENS_CACHE_DIR")
            ?? Path.Combine(Env("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "diffusion-lens");
    }

    /// <summary>sha256 (lower-case hex) of <paramref name="path"/>'s bytes.</summary>
    public string Sha256(string path)
    {
        var full = Path.GetFullPath(path);
        var info = new FileInfo(full);
        var stat = (info.Length, info.LastWriteTimeUtc.Ticks, info.CreationTimeUtc.Ticks);
        if (_file is not null)
            lock (_gate)
            {
                _entries ??= Read();
                if (_entries.TryGetValue(full, out var e) && (e.Length, e.WriteTicks, e.ChangeTicks) == stat) return e.Sha256;
            }
        string hash;
        using (var s = File.OpenRead(full)) hash = Convert.ToHexStringLower(SHA256.HashData(s));
        lock (_gate)
        {
            Computed++;
            if (_file is null) return hash;
            _entries![full] = new Entry(stat.Length, stat.Item2, stat.Item3, hash);
            Write();
        }
        return hash;
    }

    private Dictionary<string, Entry> Read()
    {
        if (_file is null || !File.Exists(_file)) return new(StringComparer.Ordinal);
        try
        {
            return JsonSerializer.Deserialize<Dictionary<string, Entry>>(File.ReadAllText(_file)) is { } d
                ? new(d, StringComparer.Ordinal) : new(StringComparer.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or NotSupportedException)
        {
            return new(StringComparer.Ordinal);
        }
    }

    /// <summary>Merges with what other processes wrote meanwhile, then replaces the file atomically.</summary>
    private void Write()
    {
        if (_file is null) return;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(_file)!);
            foreach (var (k, v) in Read()) _entries!.TryAdd(k, v);
            var tmp = $"{_file}.{Environment.ProcessId}.tmp";
            File.WriteAllText(tmp, JsonSerializer.Serialize(_entries));
            File.Move(tmp, _file, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a read-only or full cache folder: the hashes are still right, only not remembered
        }
    }
}
