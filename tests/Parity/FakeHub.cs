using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// A Hugging Face Hub stand-in on 127.0.0.1 (HttpListener) for the download tests: <c>/api/models/REPO/revision/REV</c>
/// (sha + siblings) and <c>/REPO/resolve/COMMIT/PATH</c> (HEAD and GET, Range, X-Linked-Etag/X-Linked-Size = sha256
/// and size for .safetensors as for LFS files, ETag = git blob sha1 otherwise), with injected faults: a dropped
/// transfer, a gated repository (401 without the right token), a wrong hash. Never the real Hub.
/// </summary>
public sealed class FakeHub : IDisposable
{
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    private readonly HttpListener _listener = new();
    private readonly Dictionary<string, Dictionary<string, byte[]>> _repos = new();
    public string Endpoint { get; }
    public List<string> Requests { get; } = new();
    /// <summary>Files whose first GET is cut off after half of its bytes.</summary>
    public HashSet<string> DropOnce { get; } = new();
    /// <summary>Repositories that answer 401 unless the Bearer token is <see cref="GatedToken"/>.</summary>
    public HashSet<string> Gated { get; } = new();
    public string GatedToken { get; set; } = "hf_test_token";
    /// <summary>Files whose reported hash is wrong.</summary>
    public HashSet<string> WrongHash { get; } = new();

    public FakeHub()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Endpoint = $"http://127.0.0.1:{port}";
        _listener.Prefixes.Add(Endpoint + "/");
        _listener.Start();
        _ = Task.Run(Loop);
    }

    public void AddRepo(string repo, string folder, IDictionary<string, byte[]>? extra = null)
    {
        var files = Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace('\\', '/'), File.ReadAllBytes);
        foreach (var (k, v) in extra ?? new Dictionary<string, byte[]>()) files[k] = v;
        _repos[repo] = files;
    }

    private async Task Loop()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception) { return; }
            try { Handle(ctx); }
            catch (Exception) { try { ctx.Response.Abort(); } catch (Exception) { } }
        }
    }

    private void Handle(HttpListenerContext ctx)
    {
        var req = ctx.Request;
        var res = ctx.Response;
        var path = Uri.UnescapeDataString(req.Url!.AbsolutePath);
        lock (Requests) Requests.Add($"{req.HttpMethod} {path}{(req.Headers["Range"] is string r ? " " + r : "")}");
        string? repo = null;
        string? file = null;
        if (path.StartsWith("/api/models/"))
        {
            var rest = path["/api/models/".Length..];
            int i = rest.IndexOf("/revision/", StringComparison.Ordinal);
            if (i > 0) repo = rest[..i];
        }
        else
        {
            int i = path.IndexOf("/resolve/", StringComparison.Ordinal);
            if (i > 0)
            {
                repo = path[1..i];
                var after = path[(i + "/resolve/".Length)..];
                int j = after.IndexOf('/');
                if (j > 0 && after[..j] == Commit) file = after[(j + 1)..];
            }
        }
        if (repo is null || !_repos.TryGetValue(repo, out var files)) { Status(res, 404); return; }
        if (Gated.Contains(repo) && req.Headers["Authorization"] != $"Bearer {GatedToken}") { Status(res, 401); return; }
        if (file is null && path.StartsWith("/api/"))
        {
            var json = JsonSerializer.Serialize(new { id = repo, sha = Commit, siblings = files.Keys.Select(k => new { rfilename = k }) });
            Send(res, Encoding.UTF8.GetBytes(json), 0);
            return;
        }
        if (file is null || !files.TryGetValue(file, out var data)) { Status(res, 404); return; }
        bool lfs = file.EndsWith(".safetensors");
        string hash = lfs ? Convert.ToHexStringLower(SHA256.HashData(data))
            : Convert.ToHexStringLower(SHA1.HashData(Encoding.ASCII.GetBytes($"blob {data.Length}\0").Concat(data).ToArray()));
        if (WrongHash.Contains(file)) hash = new string('e', hash.Length);
        if (lfs)
        {
            res.Headers["X-Linked-Etag"] = $"\"{hash}\"";
            res.Headers["X-Linked-Size"] = data.Length.ToString();
            res.Headers["ETag"] = "\"lfs-pointer-etag\"";
        }
        else res.Headers["ETag"] = $"\"{hash}\"";
        res.Headers["X-Repo-Commit"] = Commit;
        if (req.HttpMethod == "HEAD")
        {
            res.ContentLength64 = data.Length;
            res.StatusCode = 200;
            res.Close();
            return;
        }
        long from = 0;
        if (req.Headers["Range"] is string range && range.StartsWith("bytes=") && range.EndsWith("-"))
            from = long.Parse(range["bytes=".Length..^1]);
        bool drop;
        lock (DropOnce) drop = DropOnce.Remove(file);
        if (from > 0)
        {
            res.StatusCode = 206;
            res.Headers["Content-Range"] = $"bytes {from}-{data.Length - 1}/{data.Length}";
        }
        var body = data.AsSpan((int)from).ToArray();
        if (drop)
        {
            res.ContentLength64 = body.Length;
            res.OutputStream.Write(body, 0, body.Length / 2);
            res.OutputStream.Flush();
            res.Abort();
            return;
        }
        Send(res, body, from > 0 ? 206 : 200);
    }

    private static void Send(HttpListenerResponse res, byte[] body, int status)
    {
        if (status != 0) res.StatusCode = status;
        res.ContentLength64 = body.Length;
        res.OutputStream.Write(body);
        res.Close();
    }

    private static void Status(HttpListenerResponse res, int code)
    {
        res.StatusCode = code;
        res.ContentLength64 = 0;
        res.Close();
    }

    public void Dispose()
    {
        // Close alone stops and releases the port; Stop() first made Close() look the endpoint up again, re-binding the
        // port, which fails ("Address already in use") when another process has taken it meanwhile
        _listener.Close();
    }
}
