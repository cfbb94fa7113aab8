namespace DiffusionLens.Loading.Hub;

/// <summary>
/// The Hugging Face cache as huggingface_hub lays it out: <c>models--org--name/{blobs,refs,snapshots}</c> under
/// <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>; <c>refs/REVISION</c> holds a commit,
/// <c>snapshots/COMMIT/PATH</c> links to <c>blobs/ETAG</c>.
/// </summary>
internal sealed class HubCache
{
    public string Root { get; }
    public HubCache(string root) => Root = root;

    public static string HfHome =>
        Env("HF_HOME") ?? Path.Combine(Env("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "huggingface");

    public static HubCache Default => new(Env("HF_HUB_CACHE") ?? Env("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(HfHome, "hub"));

    /// <summary>HF_HUB_OFFLINE=1 (or true/yes/on): never touch the network.</summary>
    public static bool Offline => Env("HF_HUB_OFFLINE")?.ToLowerInvariant() is "1" or "true" or "yes" or "on";

    /// <summary>HF_TOKEN, else the token file huggingface_hub's login writes (HF_TOKEN_PATH, else HF_HOME/token).</summary>
    public static string? Token
    {
        get
        {
            if (Env("HF_TOKEN") is string t) return t.Trim();
            var file = Env("HF_TOKEN_PATH") ?? Path.Combine(HfHome, "token");
            try { return File.Exists(file) && File.ReadAllText(file).Trim() is { Length: > 0 } s ? s : null; }
            catch (IOException) { return null; }
        }
    }

    public static string Endpoint => (Env("HF_ENDPOINT") ?? "https://huggingface.co").TrimEnd('/');

    private static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    public string RepoDir(string repoId) => Path.Combine(Root, "models--" + repoId.Replace("/", "--"));
    public string SnapshotDir(string repoId, string commit) => Path.Combine(RepoDir(repoId), "snapshots", commit);
    public string BlobPath(string repoId, string etag) => Path.Combine(RepoDir(repoId), "blobs", etag);

    public static bool IsCommit(string revision) => revision.Length == 40 && revision.All(Uri.IsHexDigit);

    /// <summary>The commit a revision names in the cache (a commit hash is itself), or null.</summary>
    public string? ResolveRef(string repoId, string revision)
    {
        if (IsCommit(revision)) return revision;
        var refFile = Path.Combine(RepoDir(repoId), "refs", revision);
        if (!File.Exists(refFile)) return null;
        var commit = File.ReadAllText(refFile).Trim();
        return IsCommit(commit) ? commit : null;
    }

    public void WriteRef(string repoId, string revision, string commit)
    {
        if (IsCommit(revision) || revision == commit) return;
        var refFile = Path.Combine(RepoDir(repoId), "refs", revision);
        Directory.CreateDirectory(Path.GetDirectoryName(refFile)!);
        File.WriteAllText(refFile, commit);
    }

    /// <summary>Links snapshots/COMMIT/PATH to the blob (a relative symlink, as huggingface_hub makes; a copy where links fail).</summary>
    public void LinkSnapshot(string repoId, string commit, string relPath, string blob)
    {
        var dst = Path.Combine(SnapshotDir(repoId, commit), relPath);
        Directory.CreateDirectory(Path.GetDirectoryName(dst)!);
        if (File.Exists(dst) || new FileInfo(dst).LinkTarget is not null) File.Delete(dst);
        try { File.CreateSymbolicLink(dst, Path.GetRelativePath(Path.GetDirectoryName(dst)!, blob)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException) { File.Copy(blob, dst); }
    }
}
