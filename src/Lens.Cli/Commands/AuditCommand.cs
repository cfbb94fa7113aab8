using System.Globalization;
using DiffusionLens.Findings;
using DiffusionLens.Judge;
using DiffusionLens.Sweep;
using DiffusionLens.Tokenizers;

namespace DiffusionLens.Cli.Commands;

/// <summary><c>lens audit</c>: runs sweep + judge + emergence analysis for each claim of a claims file.</summary>
internal sealed class AuditCommand : ICommand
{
    private readonly Func<Action<string>, ISweepRunner> _runnerFactory;
    private readonly Func<string, ITextTokenizer> _tokenizerForFolder;

    /// <summary>The real command: lens sweeps and the CLIP BPE tokenizer of the judge folder.</summary>
    public AuditCommand() : this(log => new LensSweepRunner(log), ClipTokenizer.FromFolder) { }

    /// <param name="runnerFactory">the sweeps (tests pass a fake)</param>
    /// <param name="tokenizerForFolder">builds the judge's tokenizer from its folder</param>
    public AuditCommand(Func<Action<string>, ISweepRunner> runnerFactory, Func<string, ITextTokenizer> tokenizerForFolder)
    {
        _runnerFactory = runnerFactory;
        _tokenizerForFolder = tokenizerForFolder;
    }

    public string Name => "audit";
    public string Summary => "check the paper's claims: sweeps, CLIP judge, emergence order, verdicts and an HTML report";
    public string Usage => @"usage: lens audit --claims FILE --out DIR [options]

For each claim of FILE (e.g. fixtures/claims/paper-claims.json), for each prompt and seed: runs the lens sweep,
scores every layer image with the CLIP judge, finds the layer where each concept emerges (rule and threshold from
the claims file) and which of the first two concepts emerges first; then the verdict over the seeds. Writes
DIR/audit.json (verdict table and all numbers), DIR/report.html (self-contained) and per run
DIR/CLAIM/pN-seedS/{layer-XX.png, scores.json, scores.svg}. A claim whose model folder is not given
(its environment variable, e.g. LENS_SD15_DIR) is skipped with that reason.

options:
  --claims FILE        claims file (required)
  --out DIR            output folder (required)
  --seeds LIST         comma-separated seeds replacing every claim's seeds
  --only LIST          comma-separated claim ids to run (default: all)
  --clip DIR           CLIP judge folder (default: the claims file's judge_dir, else $LENS_CLIP_DIR)
  --device D           sweep device: cpu or cuda (default: the claims file's, cpu)
  --dtype T            sweep dtype (default float32)
  --variant NAME       weights variant for every sweep (e.g. fp16); a claim's variant field overrides it
  --judge-device D     cpu (default) or cuda
  --batch-size N       judge images per encoder call (default 16)
  --batch N            layers denoised together in one UNet batch (default 1 = diffusers' exact batch)
  --fail-on LIST       verdicts that fail the audit (exit 1): any of contradicted, inconclusive, skipped,
                       or none (default contradicted,inconclusive); a claim whose runs failed always fails
  --overwrite          replace an output folder this tool wrote before (one holding its audit.json)
  --shard K/N          run only shard K (0-based) of N: the runs at positions p of the plan (claims, prompts, seeds)
                       with p mod N == K. '--shard N' takes K from JOB_COMPLETION_INDEX (Kubernetes Indexed Job,
                       0-based) or else SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN, divided by
                       SLURM_ARRAY_TASK_STEP, when set; so --array=0-7 and --array=1-8 both give 0..7). A shard writes
                       DIR/shard.json and DIR/runs/CLAIM/KEY.json in place (no audit.json); run again, it skips the runs
                       that finished (resume after preemption). Combine shards with 'lens audit merge'.
  --devices LIST       comma-separated sweep devices of one kind (cuda:0,cuda:1 or cpu,cpu): one worker per device,
                       each with its own model; worker w takes every W-th run

lens audit merge SHARD_DIR... --out DIR [--overwrite] [--fail-on LIST]
  checks that the shards ran the same claims file (sha256), options and models (weights sha256) and that every shard
  and run is there, then writes DIR/audit.json, DIR/report.html and the runs' folders; exit codes as below.

Exit codes: 0 every claim that ran is supported (and no verdict listed in --fail-on occurred), 1 a claim's verdict
is listed in --fail-on or its runs failed, 2 bad usage or input, 3 nothing ran (every claim was skipped),
4 the run failed (out of memory, I/O), 130 interrupted.

The output folder is written to a hidden sibling and renamed into place when the audit completes. One model is
loaded at a time.";

    public int Run(IReadOnlyList<string> args)
    {
        if (args.Count > 0 && args[0] == "merge") return Merge(args.Skip(1).ToList());
        var a = CliArgs.Parse(Name, args, new[] { "claims", "out", "seeds", "only", "clip", "device", "dtype", "variant", "judge-device", "batch-size", "batch", "fail-on", "shard", "devices" }, new[] { "overwrite" });
        var shard = a.Get("shard") is { } shardText ? ShardSpec.Parse(shardText, Environment.GetEnvironmentVariable) : null;
        var devices = a.Get("devices") is { } dl ? ConceptSet.ParseList(dl) : null;
        if (devices is { Length: 0 }) throw new LensException("option '--devices' lists no devices");
        if (devices is not null && a.Has("device")) throw new LensException("give --device or --devices, not both");
        var failOn = ParseFailOn(a.Get("fail-on"));
        int batch = a.Int("batch", 1);
        if (batch < 1) throw new LensException($"--batch must be at least 1 (got {batch})");
        var claims = ClaimsFile.Load(a.Require("claims"));
        var outDir = a.Require("out");
        IReadOnlyList<long>? seeds = null;
        if (a.Get("seeds") is { } seedText)
        {
            var parts = ConceptSet.ParseList(seedText);
            seeds = parts.Select(p => long.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out var s)
                ? s : throw new LensException($"option '--seeds' must be comma-separated integers, got '{p}'")).ToArray();
            if (seeds.Count == 0) throw new LensException("option '--seeds' lists no seeds");
        }
        var only = a.Get("only") is { } o ? ConceptSet.ParseList(o) : null;

        string? fileJudge = claims.Defaults.JudgeDir is { } jd ? Path.GetFullPath(Path.Combine(claims.Folder, jd)) : null;
        string clipDir = a.Get("clip") ?? fileJudge ?? Environment.GetEnvironmentVariable(claims.Defaults.JudgeEnv)
            ?? throw new LensException($"no CLIP judge: pass --clip DIR (a folder made by fixtures/export_clip_onnx.py) or set {claims.Defaults.JudgeEnv}");
        if (clipDir.Length == 0) throw new LensException($"no CLIP judge: {claims.Defaults.JudgeEnv} is empty");

        using var judge = ClipJudge.Load(clipDir, _tokenizerForFolder(JudgeConfig.Load(clipDir).TokenizerFolder), a.Get("judge-device", "cpu"), a.Int("batch-size", 16));
        using var output = shard is null ? new OutputFolder(outDir, a.Flag("overwrite")) : null;
        if (shard is not null) CheckShardFolder(outDir);
        var auditor = new Auditor(_ => _runnerFactory(msg => Console.Error.WriteLine(msg)), judge);
        var report = auditor.Run(claims, new AuditOptions
        {
            OutDir = output?.WorkPath ?? outDir,
            Seeds = seeds,
            Only = only,
            Device = a.Get("device"),
            Devices = devices,
            DType = a.Get("dtype", "float32"),
            Variant = a.Get("variant"),
            Batch = batch,
            Shard = shard,
            Log = msg => Console.Error.WriteLine(msg),
            JudgeInfo = new JudgeInfo
            {
                Folder = Path.GetFullPath(clipDir),
                Source = judge.Config.Source,
                LogitScale = judge.Config.LogitScale,
                ImageSize = judge.Config.ImageSize,
                Device = judge.Device,
            },
        });
        if (shard is not null)
        {
            int runs = report.Claims.Sum(c => c.Runs.Count), failed = report.Claims.Sum(c => c.Runs.Count(r => r.Error is not null));
            Console.WriteLine($"shard {shard}: {runs} runs ({auditor.RunsResumed} resumed, {auditor.RunsDone} run now, {failed} failed); wrote {Path.Combine(outDir, ShardManifest.FileName)}; combine the shards with: lens audit merge DIR... --out DIR");
            if (report.Claims.Count == 0 || report.Claims.All(c => c.Verdict == Verdict.Skipped))
            {
                Console.Error.WriteLine("lens audit: nothing ran: every claim was skipped (exit 3)");
                return ExitCodes.NothingRan;
            }
            if (failed > 0) Console.Error.WriteLine($"lens audit: failed: {failed} run(s) of shard {shard} failed (exit 1); run the shard again to redo them");
            return failed > 0 ? ExitCodes.AuditFailed : ExitCodes.Ok;
        }

        output!.Commit();
        return Finish(report, outDir, failOn);
    }

    /// <summary>A shard writes in place: a folder of another claims file's shard, or one holding other files, is refused.</summary>
    private static void CheckShardFolder(string outDir)
    {
        OutputFolder.CheckNotProtected(Path.GetFullPath(outDir));
        if (!Directory.Exists(outDir) || !Directory.EnumerateFileSystemEntries(outDir).Any()) return;
        if (!File.Exists(Path.Combine(outDir, ShardManifest.FileName)))
            throw new LensException($"output folder {Path.GetFullPath(outDir)} is not empty and is not a shard folder (no {ShardManifest.FileName}): choose another --out for the shard");
    }

    /// <summary><c>lens audit merge DIR... --out DIR</c>.</summary>
    private int Merge(IReadOnlyList<string> args)
    {
        var dirs = args.TakeWhile(x => !x.StartsWith("--", StringComparison.Ordinal)).ToList();
        var a = CliArgs.Parse(Name, args.Skip(dirs.Count).ToList(), new[] { "out", "fail-on" }, new[] { "overwrite" });
        var failOn = ParseFailOn(a.Get("fail-on"));
        if (dirs.Count == 0) throw new LensException("usage: lens audit merge SHARD_DIR... --out DIR: no shard folders given");
        var outDir = a.Require("out");
        using var output = new OutputFolder(outDir, a.Flag("overwrite"));
        var report = AuditMerger.Merge(dirs, output.WorkPath);
        output.Commit();
        return Finish(report, outDir, failOn);
    }

    private static int Finish(AuditReport report, string outDir, IReadOnlySet<Verdict> failOn)
    {
        Console.WriteLine($"{"claim",-32} {"expected",-12} {"1st/2nd/sim/none",-18} verdict");
        foreach (var c in report.Claims)
            Console.WriteLine($"{c.Id,-32} {c.ExpectedOrder.ToString().ToLowerInvariant(),-12} {$"{c.Counts.First}/{c.Counts.Second}/{c.Counts.Simultaneous}/{c.Counts.Neither}",-18} {c.Verdict.ToString().ToLowerInvariant()}: {c.VerdictReason}");
        Console.WriteLine($"wrote {Path.Combine(outDir, Auditor.AuditFileName)} and {Path.Combine(outDir, Auditor.ReportFileName)}");
        int code = ExitCode(report, failOn);
        if (code == ExitCodes.NothingRan) Console.Error.WriteLine("lens audit: nothing ran: every claim was skipped (exit 3)");
        else if (code != ExitCodes.Ok) Console.Error.WriteLine($"lens audit: failed: a claim's verdict is one of {(failOn.Count == 0 ? "error" : string.Join(", ", failOn.Select(v => v.ToString().ToLowerInvariant()).Append("error")))} (exit 1)");
        return code;
    }

    /// <summary>The verdicts --fail-on accepts.</summary>
    public static readonly IReadOnlyDictionary<string, Verdict> FailOnNames = new Dictionary<string, Verdict>
    {
        ["contradicted"] = Verdict.Contradicted,
        ["inconclusive"] = Verdict.Inconclusive,
        ["skipped"] = Verdict.Skipped,
    };

    public static readonly IReadOnlySet<Verdict> DefaultFailOn = new HashSet<Verdict> { Verdict.Contradicted, Verdict.Inconclusive };

    /// <summary>"contradicted,inconclusive" -> the set; "none" -> empty; anything else names the accepted values.</summary>
    public static IReadOnlySet<Verdict> ParseFailOn(string? text)
    {
        if (text is null) return DefaultFailOn;
        var parts = text.Split(',').Select(p => p.Trim().ToLowerInvariant()).Where(p => p.Length > 0).ToList();
        if (parts.Count == 1 && parts[0] == "none") return new HashSet<Verdict>();
        if (parts.Count == 0) throw new LensException("option '--fail-on' lists no verdicts; use contradicted, inconclusive, skipped (comma-separated) or none");
        var set = new HashSet<Verdict>();
        foreach (var p in parts)
            set.Add(FailOnNames.TryGetValue(p, out var v) ? v
                : throw new LensException($"option '--fail-on': unknown verdict '{p}'; use contradicted, inconclusive, skipped (comma-separated) or none"));
        return set;
    }

    /// <summary>
    /// The audit's exit code: 3 when no claim ran (all skipped), else 1 when a claim's runs failed or its verdict is in
    /// <paramref name="failOn"/>, else 0.
    /// </summary>
    public static int ExitCode(AuditReport report, IReadOnlySet<Verdict> failOn)
    {
        if (report.Claims.Count == 0 || report.Claims.All(c => c.Verdict == Verdict.Skipped)) return ExitCodes.NothingRan;
        if (report.Claims.Any(c => c.Verdict == Verdict.Error || failOn.Contains(c.Verdict))) return ExitCodes.AuditFailed;
        return ExitCodes.Ok;
    }
}
