using DiffusionLens.Loading;
using DiffusionLens.Loading.Hub;
using DiffusionLens.Pipelines;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// --model as a Hub id: the Hugging Face cache layout, downloads from a local stand-in Hub (<see cref="FakeHub"/>,
/// 127.0.0.1 only) with a dropped transfer, a 404, a 401 on a gated repository and a wrong hash; offline mode.
/// </summary>
public sealed class ModelResolverTests : IDisposable
{
    private readonly FakeHub _hub = new();
    private readonly string _cacheDir = Directory.CreateTempSubdirectory("lens-hub-cache-").FullName;
    private HubCache Cache => new(_cacheDir);
    private static string Fixture(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    public ModelResolverTests()
    {
        _hub.AddRepo("tiny/sd-tiny-12", Fixture("sd-tiny-12"), new Dictionary<string, byte[]>
        {
            ["README.md"] = "not needed"u8.ToArray(),
            ["unet/diffusion_pytorch_model.bin"] = new byte[100],
            ["safety_checker/model.safetensors"] = new byte[100],
        });
        _hub.AddRepo("tiny/if-tiny-a", Fixture("if-tiny-a"));
    }

    public void Dispose()
    {
        _hub.Dispose();
        Directory.Delete(_cacheDir, true);
    }

    private string Resolve(string repo, string? variant = null, bool offline = false, string? token = null) =>
        ModelResolver.Resolve(repo, null, variant, cache: Cache, endpoint: _hub.Endpoint, offline: offline, token: token);

    [Fact]
    public void DownloadsOnlyWhatThePipelineNeeds_InTheHubCacheLayout()
    {
        var dir = Resolve("tiny/sd-tiny-12");
        var repoDir = Path.Combine(_cacheDir, "models--tiny--sd-tiny-12");
        Assert.Equal(Path.Combine(repoDir, "snapshots", FakeHub.Commit), dir);
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(repoDir, "refs", "main")));
        var src = Fixture("sd-tiny-12");
        foreach (var f in Directory.GetFiles(src, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(src, f);
            var snap = Path.Combine(dir, rel);
            Assert.True(File.Exists(snap), rel);
            var target = new FileInfo(snap).LinkTarget;
            Assert.NotNull(target); // a relative link into blobs/, as huggingface_hub makes
            Assert.StartsWith(Path.Combine(repoDir, "blobs"), Path.GetFullPath(Path.Combine(Path.GetDirectoryName(snap)!, target!)));
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(snap));
        }
        Assert.False(File.Exists(Path.Combine(dir, "README.md")));
        Assert.False(File.Exists(Path.Combine(dir, "unet", "diffusion_pytorch_model.bin")));
        Assert.False(Directory.Exists(Path.Combine(dir, "safety_checker")));
        Assert.Empty(Directory.GetFiles(Path.Combine(repoDir, "blobs"), "*.incomplete"));
        // the folder is usable as it is
        Assert.Equal("sd", PromptTokenizer.Load(dir).Kind);
        Assert.NotEmpty(WeightSet.FromFolder(Path.Combine(dir, "unet")).Keys);

        // a second resolve downloads nothing (one API call, no file requests)
        _hub.Requests.Clear();
        Assert.Equal(dir, Resolve("tiny/sd-tiny-12"));
        Assert.All(_hub.Requests, r => Assert.Contains("/api/models/", r));
    }

    [Fact]
    public void VariantShardsListedByTheIndexAreDownloaded()
    {
        var dir = Resolve("tiny/if-tiny-a", variant: "fp16");
        foreach (var f in new[] { "model.safetensors.index.fp16.json", "model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors" })
            Assert.True(File.Exists(Path.Combine(dir, "text_encoder", f)), f);
        Assert.NotEmpty(WeightSet.FromFolder(Path.Combine(dir, "text_encoder"), "fp16").Keys);
        Assert.Equal("if", PromptTokenizer.Load(dir).Kind);
    }

    [Fact]
    public void DroppedTransferIsResumedWithARange()
    {
        const string file = "unet/diffusion_pytorch_model.safetensors";
        _hub.DropOnce.Add(file);
        var dir = Resolve("tiny/sd-tiny-12");
        Assert.Equal(File.ReadAllBytes(Path.Combine(Fixture("sd-tiny-12"), file)), File.ReadAllBytes(Path.Combine(dir, file)));
        var gets = _hub.Requests.Where(r => r.StartsWith("GET") && r.Contains(file)).ToList();
        Assert.Equal(2, gets.Count);
        Assert.Contains("bytes=", gets[1]);
        Assert.DoesNotContain("bytes=0-", gets[1]);
    }

    [Fact]
    public void UnknownRepositoryIs404Message()
    {
        var e = Assert.Throws<LensException>(() => Resolve("tiny/no-such-model"));
        Assert.Contains("404", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void GatedRepositorySaysToAcceptTheLicenceAndSetHfToken()
    {
        _hub.Gated.Add("tiny/if-tiny-a");
        var e = Assert.Throws<LensException>(() => Resolve("tiny/if-tiny-a", variant: "fp16"));
        Assert.Contains("401", e.Message);
        Assert.Contains("accept its licence", e.Message);
        Assert.Contains("HF_TOKEN", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_cacheDir, "models--tiny--if-tiny-a", "snapshots")));
        // with the token the same repository downloads
        var dir = Resolve("tiny/if-tiny-a", variant: "fp16", token: _hub.GatedToken);
        Assert.True(File.Exists(Path.Combine(dir, "model_index.json")));
    }

    [Fact]
    public void OnlyVariantWeightsWithoutVariantAreRefusedBeforeDownloading()
    {
        // diffusers loads plain files without variant=; if-tiny-a's text encoder has only fp16-variant shards
        var e = Assert.Throws<LensException>(() => Resolve("tiny/if-tiny-a"));
        Assert.Contains("text_encoder has only variant weights", e.Message);
        Assert.Contains("model.fp16-00001-of-00002.safetensors", e.Message);
        Assert.Contains("--variant fp16", e.Message);
        var blobs = Path.Combine(_cacheDir, "models--tiny--if-tiny-a", "blobs");
        Assert.False(Directory.Exists(blobs) && Directory.EnumerateFiles(blobs).Any(f => new FileInfo(f).Length > 100_000),
            "no weights may be downloaded for a refused variant");
    }

    [Fact]
    public void WrongHashIsRejectedAndLeavesNothingBehind()
    {
        const string file = "vae/diffusion_pytorch_model.safetensors";
        _hub.WrongHash.Add(file);
        var e = Assert.Throws<LensException>(() => Resolve("tiny/sd-tiny-12"));
        Assert.Contains("checksum", e.Message);
        Assert.Contains(file, e.Message);
        var blobs = Path.Combine(_cacheDir, "models--tiny--sd-tiny-12", "blobs");
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));
        Assert.False(File.Exists(Path.Combine(_cacheDir, "models--tiny--sd-tiny-12", "snapshots", FakeHub.Commit, file)));
    }

    [Fact]
    public void OfflineUsesTheCacheAndNeverTheNetwork()
    {
        var e = Assert.Throws<LensException>(() => Resolve("tiny/sd-tiny-12", offline: true));
        Assert.Contains("HF_HUB_OFFLINE", e.Message);
        var dir = Resolve("tiny/sd-tiny-12");
        _hub.Requests.Clear();
        Assert.Equal(dir, Resolve("tiny/sd-tiny-12", offline: true));
        Assert.Empty(_hub.Requests);
    }

    [Fact]
    public void LocalFolderIsReturnedAsItIs_AndNonIdsAreNotFound()
    {
        Assert.Equal(Fixture("sd-tiny-12"), ModelResolver.Resolve(Fixture("sd-tiny-12")));
        var e = Assert.Throws<LensException>(() => ModelResolver.Resolve("/no/such/folder"));
        Assert.Contains("model folder not found", e.Message);
    }
}
