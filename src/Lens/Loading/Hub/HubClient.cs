using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;

namespace DiffusionLens.Loading.Hub;

/// <summary>
/// The few Hub HTTP calls a model download needs, with huggingface_hub's semantics: the revision's commit and file
/// list from <c>/api/models/REPO/revision/REV</c>; each file's ETag from a HEAD on <c>/REPO/resolve/COMMIT/PATH</c>
/// (<c>X-Linked-Etag</c> = the sha256 of an LFS file, else <c>ETag</c> = its git blob sha1), then the bytes into
/// <c>blobs/ETAG.incomplete</c>, resumed with an HTTP Range after a dropped transfer, checked against that hash and
/// renamed into place.
/// </summary>
internal sealed class HubClient : IDisposable
{
    private readonly HttpClient _get;
    private readonly HttpClient _head;
    private readonly string _endpoint;
    private readonly string? _token;
    public int MaxAttempts { get; init; } = 5;

    public HubClient(string endpoint, string? token)
    {
        _endpoint = endpoint.TrimEnd('/');
        _token = token;
        _get = new HttpClient(new HttpClientHandler { AllowAutoRedirect = true }) { Timeout = TimeSpan.FromMinutes(30) };
        // the Hub answers a HEAD on an LFS file with a redirect whose own headers carry X-Linked-Etag/X-Linked-Size
        _head = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { Timeout = TimeSpan.FromSeconds(60) };
    }

    public void Dispose()
    {
        _get.Dispose();
        _head.Dispose();
    }

    private HttpRequestMessage Request(HttpMethod m, string url)
    {
        var r = new HttpRequestMessage(m, url);
        if (_token is not null) r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
        r.Headers.UserAgent.ParseAdd("diffusion-lens-dotnet/1.0");
        return r;
    }

    private HttpResponseMessage Send(HttpClient c, HttpRequestMessage req, string repo, string what)
    {
        HttpResponseMessage resp;
        try { resp = c.Send(req, HttpCompletionOption.ResponseHeadersRead); }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            throw new LensException($"cannot reach the Hugging Face Hub at {_endpoint} for {what}: {e.Message} (set HF_HUB_OFFLINE=1 to use only the local cache)");
        }
        int code = (int)resp.StatusCode;
        if (code is 401 or 403)
        {
            resp.Dispose();
            throw new LensException(
                $"{repo}: access denied (HTTP {code}) for {what}. The repository is gated or private: accept its licence on " +
                $"{_endpoint}/{repo} while logged in, then set HF_TOKEN to a token of that account (or log in with `hf auth login`)" +
                (_token is null ? "; no token is set now" : "; the token in use was refused"));
        }
        if (code == 404)
        {
            resp.Dispose();
            throw new LensException($"{repo}: {what} not found on {_endpoint} (HTTP 404): check the model id and --revision");
        }
        return resp;
    }

    /// <summary>The commit a revision resolves to and the repository's file paths at it.</summary>
    public (string Commit, List<string> Files) RepoInfo(string repo, string revision)
    {
        var what = $"revision '{revision}'";
        using var resp = Send(_get, Request(HttpMethod.Get, $"{_endpoint}/api/models/{repo}/revision/{Uri.EscapeDataString(revision)}"), repo, what);
        if (!resp.IsSuccessStatusCode) throw new LensException($"{repo}: the Hub answered HTTP {(int)resp.StatusCode} for {what}");
        try
        {
            using var doc = JsonDocument.Parse(resp.Content.ReadAsStream());
            var sha = doc.RootElement.GetProperty("sha").GetString()!;
            if (!HubCache.IsCommit(sha)) throw new FormatException();
            var files = doc.RootElement.GetProperty("siblings").EnumerateArray().Select(s => s.GetProperty("rfilename").GetString()!).ToList();
            return (sha, files);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new LensException($"{repo}: the Hub's answer for {what} is not a model info (sha, siblings)");
        }
    }

    /// <summary>Downloads one file of a commit into the cache (blob + snapshot link) unless present; returns the snapshot path.</summary>
    public string Download(HubCache cache, string repo, string commit, string file, Action<string, long, long>? progress = null)
    {
        var snap = Path.Combine(cache.SnapshotDir(repo, commit), file);
        if (File.Exists(snap)) return snap;
        string url = $"{_endpoint}/{repo}/resolve/{commit}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}";

        string etag;
        long size;
        using (var head = Send(_head, Request(HttpMethod.Head, url), repo, $"file '{file}'"))
        {
            if (!head.IsSuccessStatusCode && (int)head.StatusCode is < 300 or >= 400)
                throw new LensException($"{repo}: the Hub answered HTTP {(int)head.StatusCode} for file '{file}'");
            etag = NormalizeEtag(Header(head, "X-Linked-Etag") ?? head.Headers.ETag?.Tag ?? Header(head, "ETag"))
                   ?? throw new LensException($"{repo}: the Hub gave no ETag for '{file}', so its download cannot be checked");
            var sizeText = Header(head, "X-Linked-Size") ?? head.Content.Headers.ContentLength?.ToString();
            size = long.TryParse(sizeText, out var s) ? s : -1;
        }
        if (etag.Contains('/') || etag.Contains('\\') || etag.Contains("..")) throw new LensException($"{repo}: unusable ETag '{etag}' for '{file}'");

        var blob = cache.BlobPath(repo, etag);
        if (!File.Exists(blob)) Fetch(repo, file, url, blob, etag, size, progress);
        cache.LinkSnapshot(repo, commit, file, blob);
        return snap;
    }

    private void Fetch(string repo, string file, string url, string blob, string etag, long size, Action<string, long, long>? progress)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        var partial = blob + ".incomplete";
        for (int attempt = 1; ; attempt++)
        {
            long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            if (size >= 0 && have > size) { File.Delete(partial); have = 0; }
            if (size >= 0 && have == size) break;
            var req = Request(HttpMethod.Get, url);
            if (have > 0) req.Headers.Range = new RangeHeaderValue(have, null);
            try
            {
                using var resp = Send(_get, req, repo, $"file '{file}'");
                if (!resp.IsSuccessStatusCode) throw new LensException($"{repo}: the Hub answered HTTP {(int)resp.StatusCode} for file '{file}'");
                bool append = have > 0 && resp.StatusCode == HttpStatusCode.PartialContent;
                if (!append) have = 0;
                using var body = resp.Content.ReadAsStream();
                using var fs = new FileStream(partial, append ? FileMode.Append : FileMode.Create, FileAccess.Write);
                var buf = new byte[1 << 16];
                int n;
                while ((n = body.Read(buf)) > 0)
                {
                    fs.Write(buf, 0, n);
                    have += n;
                    progress?.Invoke(file, have, size);
                }
                if (size < 0 || have >= size) break;
                throw new IOException($"the transfer ended at {have} of {size} bytes");
            }
            catch (Exception e) when (e is IOException or HttpRequestException)
            {
                if (attempt >= MaxAttempts)
                    throw new LensException($"{repo}: downloading '{file}' failed after {attempt} attempts: {e.Message}; run again to resume");
            }
        }
        var actual = Hash(partial, etag);
        if (actual is not null && !string.Equals(actual, etag, StringComparison.OrdinalIgnoreCase))
        {
            File.Delete(partial);
            throw new LensException($"{repo}: '{file}' failed its checksum: the Hub reports {etag}, the download hashes to {actual}; the partial file was removed, run again");
        }
        File.Move(partial, blob, overwrite: true);
    }

    /// <summary>The hash of a file in the ETag's kind: sha256 (64 hex digits, LFS) or git's blob sha1 (40); null for other ETags.</summary>
    public static string? Hash(string path, string etag)
    {
        bool hex = etag.All(Uri.IsHexDigit);
        using var fs = File.OpenRead(path);
        if (hex && etag.Length == 64) return Convert.ToHexStringLower(SHA256.HashData(fs));
        if (hex && etag.Length == 40)
        {
            using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
            sha1.AppendData(System.Text.Encoding.ASCII.GetBytes($"blob {fs.Length}\0"));
            var buf = new byte[1 << 16];
            int n;
            while ((n = fs.Read(buf)) > 0) sha1.AppendData(buf, 0, n);
            return Convert.ToHexStringLower(sha1.GetHashAndReset());
        }
        return null;
    }

    private static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault() : r.Content.Headers.TryGetValues(name, out var c) ? c.FirstOrDefault() : null;

    private static string? NormalizeEtag(string? e)
    {
        if (string.IsNullOrEmpty(e)) return null;
        if (e.StartsWith("W/")) e = e[2..];
        return e.Trim('"');
    }
}
