using System.Security.Cryptography;
using System.Text;
using DiffusionLens.Judge;

namespace DiffusionLens.Findings;

/// <summary>
/// <c>shard.json</c>: what one shard of an audit was (the claims file's text and hash, the options that change
/// results, its index) and the whole plan (every claim's model hash and runs), so <c>lens audit merge</c> can check
/// that shards belong together and rebuild the audit from their run records alone.
/// </summary>
internal sealed record ShardManifest
{
    public string Format { get; init; } = FormatName;
    public string ClaimsFile { get; init; } = "";
    public string ClaimsSha256 { get; init; } = "";
    public string ClaimsText { get; init; } = "";
    /// <summary>the options every shard must share (seeds, only, dtype, device kind, variant, batch)</summary>
    public string Options { get; init; } = "";
    public int Index { get; init; }
    public int Count { get; init; }
    public string Device { get; init; } = "cpu";
    public JudgeInfo? Judge { get; init; }
    public string Created { get; init; } = "";
    public IReadOnlyList<ClaimPlan> Plan { get; init; } = Array.Empty<ClaimPlan>();
    /// <summary>the keys of the runs this shard owns</summary>
    public IReadOnlyList<string> Runs { get; init; } = Array.Empty<string>();

    public const string FormatName = "lens-audit-shard/1";
    public const string FileName = "shard.json";

    public static string Sha256(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    public void Save(string dir)
    {
        var path = Path.Combine(dir, FileName);
        var tmp = path + $".tmp-{Environment.ProcessId}";
        FindingsJson.Write(tmp, this);
        File.Move(tmp, path, overwrite: true);
    }

    public static ShardManifest Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new LensException($"{dir} is not a lens audit shard folder (no {FileName}; made by lens audit --shard)");
        var m = FindingsJson.Read<ShardManifest>(path, "shard file");
        if (m.Format != FormatName) throw new LensException($"{path}: format must be '{FormatName}', got '{m.Format}'");
        return m;
    }
}
