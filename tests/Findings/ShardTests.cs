using System.Text.Json.Nodes;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>Sharded audits: shard selection, resume after an interruption, merge, and the refusal of mismatched shards.</summary>
public class ShardTests
{
    private static AuditOptions Options(TempDir tmp, string outName, ShardSpec? shard = null, IReadOnlyList<string>? devices = null) =>
        new() { OutDir = tmp.Sub(outName), GetEnv = _ => null, Shard = shard, Devices = devices };

    /// <summary>audit.json without what differs between runs of the same audit (creation time).</summary>
    internal static string Comparable(string auditJson)
    {
        var o = JsonNode.Parse(File.ReadAllText(auditJson))!.AsObject();
        o.Remove("created");
        o.Remove("device");
        foreach (var c in o["claims"]!.AsArray())
            foreach (var r in c!["runs"]!.AsArray()) r!.AsObject().Remove("device");
        return o["claims"]!.ToJsonString();
    }

    [Fact]
    public void Merged_shards_equal_the_unsharded_audit()
    {
        using var tmp = new TempDir();
        var claims = ClaimsFile.Load(AuditTests.WriteClaims(tmp));
        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "whole"));
        int total = 0;
        for (int k = 0; k < 3; k++)
        {
            var runner = AuditTests.Runner();
            new Auditor(runner, new FakeJudge()).Run(claims, Options(tmp, $"shard{k}", new ShardSpec(k, 3)));
            total += runner.Requests.Count;
            Assert.True(File.Exists(tmp.Sub($"shard{k}", ShardManifest.FileName)));
            Assert.False(File.Exists(tmp.Sub($"shard{k}", Auditor.AuditFileName)));
        }
        Assert.Equal(6, total); // 4 + 2 runs, each in exactly one shard
        AuditMerger.Merge(new[] { tmp.Sub("shard2"), tmp.Sub("shard0"), tmp.Sub("shard1") }, tmp.Sub("merged"));
        Assert.Equal(Comparable(tmp.Sub("whole", "audit.json")), Comparable(tmp.Sub("merged", "audit.json")));
        var merged = AuditReport.Load(tmp.Sub("merged", "audit.json"));
        Assert.All(merged.Claims.SelectMany(c => c.Runs), r => Assert.All(r.LayerImages.Values, rel => Assert.True(File.Exists(tmp.Sub("merged", rel)), rel)));
        Assert.Contains("data:image/png;base64,", File.ReadAllText(tmp.Sub("merged", "report.html")));
    }

    [Fact]
    public void An_interrupted_shard_resumes_without_redoing_finished_runs()
    {
        using var tmp = new TempDir();
        var claims = ClaimsFile.Load(AuditTests.WriteClaims(tmp));
        var curves = AuditTests.Runner().Curves;
        int calls = 0;
        var dying = new FakeSweepRunner
        {
            Curves = curves,
            FailWhen = _ => ++calls == 4 ? throw new OperationCanceledException("preempted") : false,
        };
        Assert.Throws<OperationCanceledException>(() => new Auditor(dying, new FakeJudge()).Run(claims, Options(tmp, "s", new ShardSpec(0, 1))));
        Assert.Equal(4, dying.Requests.Count); // three finished, the fourth was interrupted
        Assert.Equal(3, Directory.GetFiles(tmp.Sub("s", "runs"), "*.json", SearchOption.AllDirectories).Length);

        var again = new FakeSweepRunner { Curves = curves };
        var auditor = new Auditor(again, new FakeJudge());
        auditor.Run(claims, Options(tmp, "s", new ShardSpec(0, 1)));
        Assert.Equal(6 - 3, again.Requests.Count);
        Assert.Equal((3, 3), (auditor.RunsResumed, auditor.RunsDone));
        Assert.Equal(dying.Requests[3].Seed, again.Requests[0].Seed); // it starts at the interrupted run

        var third = new FakeSweepRunner { Curves = curves };
        new Auditor(third, new FakeJudge()).Run(claims, Options(tmp, "s", new ShardSpec(0, 1)));
        Assert.Empty(third.Requests);

        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "whole"));
        AuditMerger.Merge(new[] { tmp.Sub("s") }, tmp.Sub("merged"));
        Assert.Equal(Comparable(tmp.Sub("whole", "audit.json")), Comparable(tmp.Sub("merged", "audit.json")));
    }

    [Fact]
    public void Failed_runs_are_redone_on_the_next_pass()
    {
        using var tmp = new TempDir();
        var claims = ClaimsFile.Load(AuditTests.WriteClaims(tmp));
        var first = new FakeSweepRunner { Curves = AuditTests.Runner().Curves, FailWhen = r => r.Seed == 2 };
        new Auditor(first, new FakeJudge()).Run(claims, Options(tmp, "s", new ShardSpec(0, 1)));
        var second = new FakeSweepRunner { Curves = AuditTests.Runner().Curves };
        new Auditor(second, new FakeJudge()).Run(claims, Options(tmp, "s", new ShardSpec(0, 1)));
        Assert.Equal(new long[] { 2 }, second.Requests.Select(r => r.Seed));
    }

    [Theory]
    [InlineData("1/4", null, null, null, null, 1)]
    [InlineData("4", "2", null, null, null, 2)]
    [InlineData("4", null, "3", null, null, 3)]
    [InlineData("4", null, "4", "1", null, 3)]
    [InlineData("4", null, "7", "1", "2", 3)]
    [InlineData("4", "0", "3", null, null, 0)]
    public void Shard_index_from_the_option_or_the_job_environment(string text, string? k8s, string? slurm, string? slurmMin, string? slurmStep, int expected)
    {
        var env = new Dictionary<string, string?>
        {
            [ShardSpec.KubernetesEnv] = k8s, [ShardSpec.SlurmEnv] = slurm, [ShardSpec.SlurmMinEnv] = slurmMin, [ShardSpec.SlurmStepEnv] = slurmStep,
        };
        var s = ShardSpec.Parse(text, n => env.GetValueOrDefault(n));
        Assert.Equal((expected, 4), (s.Index, s.Count));
    }

    [Theory]
    [InlineData("4/4", "outside 0..3")]
    [InlineData("x/4", "not an integer")]
    [InlineData("1/2/3", "must be K/N")]
    [InlineData("0/0", "at least 1")]
    [InlineData("4", "neither is set")]
    public void Bad_shards_are_usage_errors(string text, string expected) =>
        Assert.Contains(expected, Assert.Throws<LensException>(() => ShardSpec.Parse(text, _ => null)).Message);

    [Fact]
    public void Merge_refuses_shards_of_other_claims_files_models_or_missing_shards()
    {
        using var tmp = new TempDir();
        var claims = ClaimsFile.Load(AuditTests.WriteClaims(tmp));
        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "a0", new ShardSpec(0, 2)));
        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "a1", new ShardSpec(1, 2)));

        Assert.Contains("shard(s) 1/2 missing", Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("a0") }, tmp.Sub("m1"))).Message);
        Assert.Contains("given twice", Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("a0"), tmp.Sub("a0") }, tmp.Sub("m2"))).Message);

        using var other = new TempDir();
        var otherClaims = ClaimsFile.Load(AuditTests.WriteClaims(other, "another prompt"));
        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(otherClaims, Options(other, "b1", new ShardSpec(1, 2)));
        var e = Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("a0"), other.Sub("b1") }, tmp.Sub("m3")));
        Assert.Contains("different claims files", e.Message);

        // the same claims file with another model: a runner that names the model by a different weights hash
        var hashed = new HashingFakeRunner("weights-B") { Curves = AuditTests.Runner().Curves };
        new Auditor(hashed, new FakeJudge()).Run(claims, Options(tmp, "c1", new ShardSpec(1, 2)));
        var e2 = Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("a0"), tmp.Sub("c1") }, tmp.Sub("m4")));
        Assert.Contains("different models", e2.Message);
        Assert.Contains("weights-B", e2.Message);

        File.Delete(Directory.GetFiles(tmp.Sub("a1", "runs"), "*.json", SearchOption.AllDirectories)[0]);
        Assert.Contains("run that shard again", Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("a0"), tmp.Sub("a1") }, tmp.Sub("m5"))).Message);
        Assert.Contains("not a lens audit shard", Assert.Throws<LensException>(() => AuditMerger.Merge(new[] { tmp.Sub("model") }, tmp.Sub("m6"))).Message);
    }

    [Fact]
    public void Devices_get_one_worker_each_with_a_fixed_share_of_the_runs()
    {
        using var tmp = new TempDir();
        var claims = ClaimsFile.Load(AuditTests.WriteClaims(tmp));
        var runners = new List<(string Device, FakeSweepRunner Runner)>();
        var auditor = new Auditor(device =>
        {
            var r = new FakeSweepRunner { Curves = AuditTests.Runner().Curves };
            lock (runners) runners.Add((device, r));
            return r;
        }, new FakeJudge());
        auditor.Run(claims, Options(tmp, "d", devices: new[] { "cpu", "cpu:1" }));
        var working = runners.Where(x => x.Runner.Requests.Count > 0).ToList();
        Assert.Equal(new[] { "cpu", "cpu:1" }, working.Select(x => x.Device).Order());
        Assert.All(working, x => Assert.All(x.Runner.Requests, r => Assert.Equal(x.Device, r.Device)));
        Assert.Equal(new[] { 3, 3 }, working.Select(x => x.Runner.Requests.Count)); // 6 runs, every other one
        var seen = working.SelectMany(x => x.Runner.Requests.Select(r => (r.Prompt, r.Seed))).ToList();
        Assert.Equal(seen.Count, seen.Distinct().Count());

        new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "one"));
        Assert.Equal(Comparable(tmp.Sub("one", "audit.json")), Comparable(tmp.Sub("d", "audit.json")));
        Assert.Contains("mixes device kinds", Assert.Throws<LensException>(() =>
            new Auditor(AuditTests.Runner(), new FakeJudge()).Run(claims, Options(tmp, "x", devices: new[] { "cpu", "cuda:0" }))).Message);
    }

    [Fact]
    public void Shards_and_merge_through_the_command_with_the_tiny_clip_judge()
    {
        Repo.RequireTinyClip();
        using var tmp = new TempDir();
        var claims = AuditTests.WriteClaims(tmp);
        var runner = AuditTests.Runner();
        AuditCommand Cmd() => new(_ => runner, _ => JudgeCommandTests.HashTokenizer());
        string[] common = { "--claims", claims, "--clip", Repo.TinyClipDir, "--only", "fake-first,fake-if", "--fail-on", "none" };
        Assert.Equal(0, Cmd().Run(common.Concat(new[] { "--out", tmp.Sub("whole") }).ToArray()));
        Assert.Equal(0, Cmd().Run(common.Concat(new[] { "--out", tmp.Sub("s0"), "--shard", "0/2" }).ToArray()));
        Assert.Equal(0, Cmd().Run(common.Concat(new[] { "--out", tmp.Sub("s1"), "--shard", "1/2", "--devices", "cpu,cpu" }).ToArray()));
        Assert.Equal(0, Cmd().Run(new[] { "merge", tmp.Sub("s0"), tmp.Sub("s1"), "--out", tmp.Sub("merged"), "--fail-on", "none" }));
        Assert.Equal(Comparable(tmp.Sub("whole", "audit.json")), Comparable(tmp.Sub("merged", "audit.json")));
        Assert.Contains("not empty and is not a shard folder",
            Assert.Throws<LensException>(() => Cmd().Run(common.Concat(new[] { "--out", tmp.Sub("whole"), "--shard", "0/2" }).ToArray())).Message);
    }
}

/// <summary>A fake runner that names every model by a fixed weights hash.</summary>
internal sealed class HashingFakeRunner : ISweepRunner, IModelHasher
{
    private readonly FakeSweepRunner _inner;
    private readonly string _hash;
    public HashingFakeRunner(string hash) { _hash = hash; _inner = new FakeSweepRunner(); }
    public Func<string, long, int, (double People, double Ocean)> Curves { init => _inner = new FakeSweepRunner { Curves = value }; }
    public SweepOutput Run(SweepRequest request) => _inner.Run(request);
    public string ModelHash(string modelDir, string? variant) => _hash;
}
