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
    public string DType { get; init; } = "float32";
    /// <summary>layers denoised together in one UNet batch (the sweep's --batch)</summary>
    public int Batch { get; init; } = 1;
    /// <summary>weights variant (e.g. "fp16"), or null for the plain files</summary>
    public string? Variant { get; init; }
    public Func<string, string?> GetEnv { get; init; } = Environment.GetEnvironmentVariable;
    public Action<string>? Log { get; init; }
    /// <summary>judge description written into audit.json</summary>
    public JudgeInfo? JudgeInfo { get; init; }
}

/// <summary>Runs sweep + judge + analysis for each claim and writes audit.json and report.html.</summary>
internal sealed class Auditor
{
    private readonly ISweepRunner _runner;
    private readonly IConceptJudge _judge;

    public Auditor(ISweepRunner runner, IConceptJudge judge)
    {
        _runner = runner ?? throw new ArgumentNullException(nameof(runner));
        _judge = judge ?? throw new ArgumentNullException(nameof(judge));
    }

    public const string AuditFileName = "audit.json";
    public const string ReportFileName = "report.html";

    public AuditReport Run(ClaimsFile file, AuditOptions options)
    {
        file.Validate();
        if (options.Seeds is { Count: 0 }) throw new LensException("--seeds: no seeds given");
        var claims = file.Claims.AsEnumerable();
        if (options.Only is { Count: > 0 } only)
        {
            var unknown = only.Where(id => file.Claims.All(c => c.Id != id)).ToList();
            if (unknown.Count > 0) throw new LensException($"unknown claim id(s) {string.Join(", ", unknown)}; claims are {string.Join(", ", file.Claims.Select(c => c.Id))}");
            claims = claims.Where(c => only.Contains(c.Id));
        }
        var outDir = Path.GetFullPath(options.OutDir);
        Directory.CreateDirectory(outDir);
        string device = options.Device ?? file.Defaults.Device;

        var results = new List<ClaimResult>();
        foreach (var claim in claims)
            results.Add(RunClaim(file, claim, options, outDir, device));

        var report = new AuditReport
        {
            ClaimsFile = Path.GetFullPath(file.Path.Length > 0 ? file.Path : "."),
            ClaimsDescription = file.Description,
            Sources = file.Sources,
            Created = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
            Judge = options.JudgeInfo,
            Device = device,
            Claims = results,
        };
        report.Save(Path.Combine(outDir, AuditFileName));
        HtmlReport.Write(report, outDir, Path.Combine(outDir, ReportFileName));
        return report;
    }

    private ClaimResult RunClaim(ClaimsFile file, Claim claim, AuditOptions options, string outDir, string device)
    {
        var analysis = file.AnalysisFor(claim);
        var template = file.TemplateFor(claim);
        var seeds = options.Seeds ?? claim.Seeds;
        var baseResult = new ClaimResult
        {
            Id = claim.Id,
            Title = claim.Title,
            Statement = claim.Statement,
            Model = claim.Model,
            ModelName = claim.ModelName,
            Prompts = claim.Prompts,
            Concepts = claim.Concepts,
            Distractors = claim.Distractors,
            Template = template,
            Seeds = seeds,
            Layers = claim.Layers,
            Steps = claim.Steps,
            Guidance = claim.Guidance,
            ExpectedOrder = claim.ExpectedOrder,
            Analysis = analysis,
            Published = claim.Published,
            Note = claim.Note,
        };
        var (modelDir, reason) = file.ResolveModelDir(claim, options.GetEnv);
        if (modelDir is null)
        {
            options.Log?.Invoke($"claim {claim.Id}: skipped: {reason}");
            return baseResult with { Verdict = Verdict.Skipped, VerdictReason = reason ?? "no model folder" };
        }

        var runs = new List<RunResult>();
        for (int pi = 0; pi < claim.Prompts.Count; pi++)
            foreach (var seed in seeds)
                runs.Add(RunOne(claim, pi, seed, modelDir, template, analysis, options, outDir, device));

        var ok = runs.Where(r => r.Error is null).ToList();
        var counts = OrderCounts.From(ok.Select(r => r.Order!.Value));
        var summary = claim.Concepts.Select(c =>
        {
            var layers = ok.Select(r => r.Emergence.TryGetValue(c, out var l) ? l : null).Where(l => l is not null).Select(l => l!.Value).ToList();
            return new EmergenceSummary
            {
                Concept = c,
                Runs = ok.Count,
                Emerged = layers.Count,
                MeanLayer = layers.Count > 0 ? layers.Average() : null,
                MinLayer = layers.Count > 0 ? layers.Min() : null,
                MaxLayer = layers.Count > 0 ? layers.Max() : null,
            };
        }).ToList();
        Verdict verdict;
        string why;
        var failed = runs.Where(r => r.Error is not null).ToList();
        if (failed.Count > 0)
        {
            verdict = Verdict.Error;
            why = $"{failed.Count}/{runs.Count} runs failed; first: {failed[0].Error}";
        }
        else
        {
            (verdict, why) = Emergence.Judge(counts, claim.ExpectedOrder, analysis.MinFraction);
        }
        options.Log?.Invoke($"claim {claim.Id}: {verdict.ToString().ToLowerInvariant()} ({counts})");
        return baseResult with
        {
            ModelDir = modelDir,
            Runs = runs,
            Counts = counts,
            EmergenceSummary = summary,
            Verdict = verdict,
            VerdictReason = why,
        };
    }

    private RunResult RunOne(Claim claim, int promptIndex, long seed, string modelDir, string template, AnalysisOptions analysis,
        AuditOptions options, string outDir, string device)
    {
        var prompt = claim.Prompts[promptIndex];
        var runDir = Path.Combine(outDir, claim.Id, $"p{promptIndex}-seed{seed}");
        var rel = Path.GetRelativePath(outDir, runDir);
        var result = new RunResult { Prompt = prompt, PromptIndex = promptIndex, Seed = seed, OutDir = rel };
        options.Log?.Invoke($"claim {claim.Id}: prompt {promptIndex}, seed {seed}: sweep -> {runDir}");
        try
        {
            Directory.CreateDirectory(runDir);
            var sweep = _runner.Run(new SweepRequest
            {
                Model = claim.Model,
                ModelDir = modelDir,
                Prompt = prompt,
                NegativePrompt = claim.NegativePrompt,
                Seed = seed,
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
                OutDir = runDir,
            });
            if (sweep.LayerImages.Count == 0) throw new LensException("the sweep wrote no layer images");
            if (claim.Layers.Layers is { } wanted)
            {
                var missing = wanted.Where(l => !sweep.LayerImages.ContainsKey(l)).ToList();
                if (missing.Count > 0) throw new LensException($"the sweep did not write layer(s) {string.Join(", ", missing)}");
            }
            var images = sweep.LayerImages.OrderBy(kv => kv.Key).Select(kv => new LayerImage(kv.Key, kv.Value)).ToList();
            var scores = _judge.Score(images, claim.Concepts, template, claim.Distractors);
            var layers = scores.LayerNumbers;
            var emergence = new Dictionary<string, int?>();
            foreach (var c in claim.Concepts)
                emergence[c] = Emergence.Layer(layers, scores.Curve(c, analysis.Metric == PresenceMetric.Cosine), analysis);
            var order = Emergence.Order(emergence[claim.Concepts[0]], emergence[claim.Concepts[1]]);
            var scoresPath = Path.Combine(runDir, "scores.json");
            scores.Save(scoresPath);
            File.WriteAllText(Path.Combine(runDir, "scores.svg"), SvgCharts.ScoresDocument(scores, analysis, emergence));
            return result with
            {
                LayerImages = sweep.LayerImages.ToDictionary(kv => kv.Key, kv => Path.GetRelativePath(outDir, Path.GetFullPath(kv.Value))),
                ScoresFile = Path.GetRelativePath(outDir, scoresPath),
                Scores = scores,
                Emergence = emergence,
                Order = order,
            };
        }
        catch (Exception e) when (e is LensException or IOException or InvalidOperationException or ArgumentException)
        {
            options.Log?.Invoke($"claim {claim.Id}: prompt {promptIndex}, seed {seed}: failed: {e.Message}");
            return result with { Error = e.Message };
        }
    }
}
