using System.Security.Cryptography;
using DiffusionLens.Loading;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The weights' sha256 cache (src/Lens/Loading/WeightHashCache.cs): the right hash first and from the cache, a file
/// read again when its bytes (and so its stat data) change, shared between instances (processes) through the file,
/// no cache folder = hashing every time, and an unreadable cache file ignored.
/// </summary>
public class WeightHashCacheTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lens-hashcache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string WriteFile(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static string Sha(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    [Fact]
    public void HashesOnceThenFromTheCache_AndAgainWhenTheFileChanges()
    {
        var bytes = new byte[100_000];
        new Random(1).NextBytes(bytes);
        var file = WriteFile("w.safetensors", bytes);
        var cache = new WeightHashCache(Path.Combine(_dir, "cache"));
        Assert.Equal(Sha(bytes), cache.Sha256(file));
        Assert.Equal(Sha(bytes), cache.Sha256(file));
        Assert.Equal(1, cache.Computed);

        // another process (a new instance) finds it in the file
        var other = new WeightHashCache(Path.Combine(_dir, "cache"));
        Assert.Equal(Sha(bytes), other.Sha256(file));
        Assert.Equal(0, other.Computed);

        // same length, new bytes, a later write time: read again
        bytes[123] ^= 0xFF;
        File.WriteAllBytes(file, bytes);
        File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(5));
        Assert.Equal(Sha(bytes), other.Sha256(file));
        Assert.Equal(1, other.Computed);
    }

    [Fact]
    public void WithoutAFolderEveryCallHashes_AndABrokenCacheFileIsIgnored()
    {
        var bytes = "weights"u8.ToArray();
        var file = WriteFile("a.bin", bytes);
        var none = new WeightHashCache(null);
        none.Sha256(file);
        none.Sha256(file);
        Assert.Equal(2, none.Computed);

        var folder = Path.Combine(_dir, "broken");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "weight-sha256.json"), "{ not json");
        var broken = new WeightHashCache(folder);
        Assert.Equal(Sha(bytes), broken.Sha256(file));
        Assert.Equal(Sha(bytes), new WeightHashCache(folder).Sha256(file)); // and it was rewritten readable
    }
}
