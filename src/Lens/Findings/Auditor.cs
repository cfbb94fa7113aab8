using DiffusionLens.Judge;
using DiffusionLens.Reports;

namespace DiffusionLens.Findings;

/// <summary>One sweep of a claim (one prompt, one seed) with its scores and analysis.</summary>
internal sealed record RunResult
{
    public string Prompt { get; init; } = "";
    public int PromptIndex { get; init; }
    public long Seed { get; init; }
    /// <summary>the sweep folder, relative to the audit folder</summary>
    public string OutDir { get; init; } = "";
    /// <summary>layer number to image file, relative to the audit folder</summary>
    public IReadOnlyDictionary<int, string> LayerImages { get; init; } = new Dictionary<int, string>();
    public string? ScoresFile { get; init; }
    public JudgeScores? Scores { get; init; }
    /// <summary>per concept, the emergence layer (null: never emerged)</summary>
    public IReadOnlyDictionary<string, int?> Emergence { get; init; } = new Dictionary<string, int?>();
    public ConceptOrder? Order { get; init; }
    public string? Error { get; init; }
    /// <summary>this run's two concepts when they are the prompt's own (a prompt set's noun_0, noun_1); null: the claim's</summary>
    public IReadOnlyList<string>? Concepts { get; init; }
    /// <summary>the device the sweep ran on</summary>
    public string? Device { get; init; }
}

/// <summary>Emergence of one concept over the runs of a claim.</summary>
internal sealed record EmergenceSummary
{
    public string Concept { get; init; } = "";
    public int Runs { get; init; }
    public int Emerged { get; init; }
    public double? MeanLayer { get; init; }
    public int? MinLayer { get; init; }
    public int? MaxLayer { get; init; }
}

internal sealed record ClaimResult
{
    public string Id { get; init; } = "";
    public string Title { get; init; } = "";
    public string Statement { get; init; } = "";
    public string Model { get; init; } = "";
    public string? ModelName { get; init; }
    public string? ModelDir { get; init; }
    public IReadOnlyList<string> Prompts { get; init; } = Array.Empty<string>();
    public IReadOnlyList<string> Concepts { get; init; } = Array.Empty<string>();
    public IReadOnlyList<string> Distractors { get; init; } = Array.Empty<string>();
    public string Template { get; init; } = "";
    public IReadOnlyList<long> Seeds { get; init; } = Array.Empty<long>();
    public LayerSelection Layers { get; init; } = LayerSelection.All;
    public int? Steps { get; init; }
    public double? Guidance { get; init; }
    public ConceptOrder ExpectedOrder { get; init; }
    public AnalysisOptions Analysis { get; init; } = new();
    public IReadOnlyList<RunResult> Runs { get; init; } = Array.Empty<RunResult>();
    public OrderCounts Counts { get; init; } = new();
    public IReadOnlyList<EmergenceSummary> EmergenceSummary { get; init; } = Array.Empty<EmergenceSummary>();
    public Verdict Verdict { get; init; }
    public string VerdictReason { get; init; } = "";
    public IReadOnlyList<PublishedFigure> Published { get; init; } = Array.Empty<PublishedFigure>();
    public string? Note { get; init; }
    /// <summary>the weights hash the runs are keyed by (<see cref="Findings.ModelHash"/>)</summary>
    public string? ModelHash { get; init; }
    /// <summary>prompt-set claims: counts, bootstrap intervals, the annotators' counts and the agreement with them</summary>
    public PromptSetResult? PromptSet { get; init; }
}

/// <summary><c>audit.json</c>: the verdict table with everything the report shows.</summary>
internal sealed record AuditReport
{
    public string Format { get; init; } = "lens-audit/1";
    public string ClaimsFile { get; init; } = "";
    public string ClaimsDescription { get; init; } = "";
    public IReadOnlyDictionary<string, SourceRef> Sources { get; init; } = new Dictionary<string, SourceRef>();
    public string Created { get; init; } = "";
    public JudgeInfo? Judge { get; init; }
    public string Device { get; init; } = "cpu";
    public IReadOnlyList<ClaimResult> Claims { get; init; } = Array.Empty<ClaimResult>();

    public void Save(string path) => FindingsJson.Write(path, this);
    public static AuditReport Load(string path) => FindingsJson.Read<AuditReport>(path, "audit file");
}

internal sealed record AuditOptions
{
    public required string OutDir { get; init; }
    /// <summary>replaces every claim's seeds when given</summary>
    public IReadOnlyList<long>? Seeds { get; init; }
    /// <summary>only these claim ids when given</summary>
    public IReadOnlyList<string>? Only { get; init; }
    /// <summary>sweep device; null uses the claims file's default</summary>
    public string? Device { get; init; }
    /// <summary>one worker per entry, each with its own sweep runner (model loaded once per worker); overrides <see cref="Device"/></summary>
    public IReadOnlyList<string>? Devices { get; init; }
    public string DType { get; init; } = "float32";
    /// <summary>layers denoised together in one UNet batch (the sweep's --batch)</summary>
    public int Batch { get; init; } = 1;
    /// <summary>weights variant (e.g. "fp16"), or null for the plain files</summary>
    public string? Variant { get; init; }
    public Func<string, string?> GetEnv { get; init; } = Environment.GetEnvironmentVariable;
    public Action<string>? Log { get; init; }
    /// <summary>judge description written into audit.json</summary>
    public JudgeInfo? JudgeInfo { get; init; }
    /// <summary>run only this shard's runs and write shard.json instead of audit.json (see <see cref="ShardSpec"/>)</summary>
    public ShardSpec? Shard { get; init; }
}

/// <summary>
/// Runs sweep + judge + analysis for each claim and writes audit.json and report.html. Every run's result is written
/// to <c>runs/CLAIM/KEY.json</c> (<see cref="RunStore"/>) as soon as it is done; a run whose record is there is not
/// run again, so an interrupted shard resumes where it stopped. With <see cref="AuditOptions.Shard"/> only that
/// shard's runs are done and shard.json is written; <see cref="AuditMerger"/> makes the audit of all shards.
/// </summary>
internal sealed class Auditor
{
    private readonly Func<string, ISweepRunner> _runnerForDevice;
    private readonly bool _ownsRunners;
    private readonly IConceptJudge _judge;
    private readonly object _judgeLock = new();

    public Auditor(ISweepRunner runner, IConceptJudge judge)
    {
        ArgumentNullException.ThrowIfNull(runner);
        _runnerForDevice = _ => runner;
        _judge = judge ?? throw new ArgumentNullException(nameof(judge));
    }

    /// <param name="runnerForDevice">a sweep runner for each worker's device (disposed by the auditor when disposable)</param>
    public Auditor(Func<string, ISweepRunner> runnerForDevice, IConceptJudge judge)
    {
        _runnerForDevice = runnerForDevice ?? throw new ArgumentNullException(nameof(runnerForDevice));
        _ownsRunners = true;
        _judge = judge ?? throw new ArgumentNullException(nameof(judge));
    }

    public const string AuditFileName = "audit.json";
    public const string ReportFileName = "report.html";

    /// <summary>Runs done by the last <see cref="Run"/> (not counting those resumed from their records).</summary>
    public int RunsDone { get; private set; }
    /// <summary>Runs of the last <see cref="Run"/> whose records were already there.</summary>
    public int RunsResumed { get; private set; }

    public AuditReport Run(ClaimsFile file, AuditOptions options)
    {
        file.Validate();
        if (options.Seeds is { Count: 0 }) throw new LensException("--seeds: no seeds given");
        var claims = SelectClaims(file, options.Only);
        var outDir = Path.GetFullPath(options.OutDir);
        Directory.CreateDirectory(outDir);
        var devices = options.Devices is { Count: > 0 } ds ? ds : new[] { options.Device ?? file.Defaults.Device };
        if (devices.Select(RunKey.DeviceKind).Distinct().Count() > 1)
            throw new LensException($"--devices {string.Join(",", devices)} mixes device kinds; use devices of one kind (e.g. cuda:0,cuda:1)");
        string device = devices.Count == 1 ? devices[0] : string.Join(",", devices);

        var plan = PlanClaims(file, claims, options, devices[0]);
        var all = plan.SelectMany(c => c.Runs).ToList();
        var mine = options.Shard is { } shard ? all.Where((_, i) => shard.Owns(i)).ToList() : all;
        Execute(file, claims.ToDictionary(c => c.Id), plan.ToDictionary(p => p.Id), mine, devices, options, outDir);

        var store = new RunStore(outDir);
        var records = mine.Select(r => (r.Key, Record: store.TryLoad(r))).Where(x => x.Record is not null).ToDictionary(x => x.Key, x => x.Record!);
        var report = AuditAssembler.Report(file, plan.Select(p => options.Shard is null ? p : p with { Runs = p.Runs.Where(r => records.ContainsKey(r.Key)).ToList() }).ToList(),
            records, options.JudgeInfo, device);
        if (options.Shard is { } s)
        {
            var text = File.ReadAllText(file.Path);
            new ShardManifest
            {
                ClaimsFile = Path.GetFullPath(file.Path),
                ClaimsSha256 = ShardManifest.Sha256(text),
                ClaimsText = text,
                Options = AuditPlanner.OptionsFingerprint(options, devices[0]),
                Index = s.Index,
                Count = s.Count,
                Device = device,
                Judge = options.JudgeInfo,
                Created = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
                Plan = plan,
                Runs = mine.Select(r => r.Key).ToList(),
            }.Save(outDir);
            return report;
        }
        report.Save(Path.Combine(outDir, AuditFileName));
        HtmlReport.Write(report, outDir, Path.Combine(outDir, ReportFileName));
        return report;
    }

    private static List<Claim> SelectClaims(ClaimsFile file, IReadOnlyList<string>? only)
    {
        var claims = file.Claims.AsEnumerable();
        if (only is { Count: > 0 })
        {
            var unknown = only.Where(id => file.Claims.All(c => c.Id != id)).ToList();
            if (unknown.Count > 0) throw new LensException($"unknown claim id(s) {string.Join(", ", unknown)}; claims are {string.Join(", ", file.Claims.Select(c => c.Id))}");
            claims = claims.Where(c => only.Contains(c.Id));
        }
        return claims.ToList();
    }

    /// <summary>
    /// Runs the runs without a record, one worker per device; worker w takes the runs at positions p with
    /// p mod W == w (a fixed assignment, so a device's work is known in advance and each worker loads each model once).
    /// </summary>
    private void Execute(ClaimsFile file, IReadOnlyDictionary<string, Claim> claims, IReadOnlyDictionary<string, ClaimPlan> plans, IReadOnlyList<PlannedRun> runs, IReadOnlyList<string> devices,
        AuditOptions options, string outDir)
    {
        var store = new RunStore(outDir);
        var todo = new List<PlannedRun>();
        int resumed = 0;
        foreach (var r in runs)
        {
            if (store.TryLoad(r) is { Result.Error: null }) resumed++;
            else todo.Add(r);
        }
        RunsResumed = resumed;
        if (resumed > 0) options.Log?.Invoke($"resuming: {resumed} of {runs.Count} runs are done already");
        int done = 0;
        void Work(int w)
        {
            var mine = todo.Where((_, i) => i % devices.Count == w).ToList();
            if (mine.Count == 0) return;
            var runner = _runnerForDevice(devices[w]);
            try
            {
                foreach (var r in mine)
                {
                    var claim = claims[r.ClaimId];
                    var result = RunOne(file, claim, plans[r.ClaimId], r, runner, options, outDir, devices[w]);
                    store.Save(new RunRecord
                    {
                        Key = r.Key,
                        Inputs = r.Inputs,
                        ModelHash = plans[r.ClaimId].ModelHash ?? "",
                        Device = devices[w],
                        Result = result,
                    }, r);
                    Interlocked.Increment(ref done);
                }
            }
            finally
            {
                if (_ownsRunners && runner is IDisposable d) d.Dispose();
            }
        }
        try
        {
            if (devices.Count == 1) Work(0);
            else Parallel.For(0, devices.Count, new ParallelOptions { MaxDegreeOfParallelism = devices.Count }, Work);
        }
        finally
        {
            RunsDone = done;
        }
    }

    /// <summary>The plan of each claim; model hashes come from the runner when it is an <see cref="IModelHasher"/>.</summary>
    private List<ClaimPlan> PlanClaims(ClaimsFile file, IReadOnlyList<Claim> claims, AuditOptions options, string device)
    {
        var probe = _runnerForDevice(device);
        try
        {
            var planner = new AuditPlanner(file, options, device, probe as IModelHasher);
            return claims.Select(planner.Plan).ToList();
        }
        finally
        {
            if (_ownsRunners && probe is IDisposable d) d.Dispose();
        }
    }

    private RunResult RunOne(ClaimsFile file, Claim claim, ClaimPlan plan, PlannedRun run, ISweepRunner runner, AuditOptions options, string outDir, string device)
    {
        var analysis = file.AnalysisFor(claim);
        var template = file.TemplateFor(claim);
        var runDir = Path.Combine(outDir, run.OutDir);
        var result = new RunResult
        {
            Prompt = run.Prompt, PromptIndex = run.PromptIndex, Seed = run.Seed, OutDir = run.OutDir, Device = device,
            Concepts = claim.PromptSet is null ? null : run.Concepts,
        };
        options.Log?.Invoke($"claim {claim.Id}: prompt {run.PromptIndex}, seed {run.Seed}: sweep on {device} -> {runDir}");
        try
        {
            // a sweep left by an interrupted run is redone from scratch
            if (Directory.Exists(runDir)) Directory.Delete(runDir, true);
            foreach (var partial in Directory.Exists(Path.GetDirectoryName(runDir)!) ? Directory.GetDirectories(Path.GetDirectoryName(runDir)!, $".{Path.GetFileName(runDir)}.partial-*") : Array.Empty<string>())
                Directory.Delete(partial, true);
            Directory.CreateDirectory(runDir);
            var sweep = runner.Run(new SweepRequest
            {
                Model = claim.Model,
                ModelDir = plan.ModelDir!,
                Prompt = run.Prompt,
                NegativePrompt = claim.NegativePrompt,
                Seed = run.Seed,
                Steps = claim.Steps,
                Guidance = claim.Guidance,
                Height = claim.Height,
                Width = claim.Width,
                Layers = claim.Layers.Layers,
                Device = device,
                DType = options.DType,
                Batch = options.Batch,
                Variant = claim.Variant ?? options.Variant,
                CleanCaption = claim.CleanCaption,
                Scheduler = claim.Scheduler,
                SeedPolicy = claim.SeedPolicy ?? "reseed",
                Stage2Dir = plan.Stage2Dir,
                Stage2Steps = claim.Stage2Steps,
                Stage2Guidance = claim.Stage2Guidance,
                NoiseLevel = claim.Stage2NoiseLevel,
                Stage2Scheduler = claim.Stage2Scheduler,
                OutDir = runDir,
            });
            if (sweep.LayerImages.Count == 0) throw new LensException("the sweep wrote no layer images");
            if (claim.Layers.Layers is { } wanted)
            {
                var missing = wanted.Where(l => !sweep.LayerImages.ContainsKey(l)).ToList();
                if (missing.Count > 0) throw new LensException($"the sweep did not write layer(s) {string.Join(", ", missing)}");
            }
            var images = sweep.LayerImages.OrderBy(kv => kv.Key).Select(kv => new LayerImage(kv.Key, kv.Value)).ToList();
            JudgeScores scores;
            lock (_judgeLock) scores = _judge.Score(images, run.Concepts, template, claim.Distractors);
            var emergence = AuditAssembler.EmergenceOf(scores, run.Concepts, analysis);
            var scoresPath = Path.Combine(runDir, "scores.json");
            scores.Save(scoresPath);
            File.WriteAllText(Path.Combine(runDir, "scores.svg"), SvgCharts.ScoresDocument(scores, analysis, emergence));
            return result with
            {
                LayerImages = sweep.LayerImages.ToDictionary(kv => kv.Key, kv => Path.GetRelativePath(outDir, Path.GetFullPath(kv.Value))),
                ScoresFile = Path.GetRelativePath(outDir, scoresPath),
                Scores = scores,
            };
        }
        catch (Exception e) when (e is LensException or IOException or InvalidOperationException or ArgumentException)
        {
            options.Log?.Invoke($"claim {claim.Id}: prompt {run.PromptIndex}, seed {run.Seed}: failed: {e.Message}");
            return result with { Error = e.Message };
        }
    }
}
