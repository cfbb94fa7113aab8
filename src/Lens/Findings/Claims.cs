using System.Text.Json;
using System.Text.Json.Serialization;
using DiffusionLens.Judge;

namespace DiffusionLens.Findings;

/// <summary>
/// Which encoder layers a claim sweeps: <c>"all"</c>, a list of layer numbers, or <c>{"from": 0, "to": 22, "step": 2}</c>
/// (inclusive). <see cref="Layers"/> is null for all layers. Always lens layers (0..N-1, the output of encoder layer
/// L): audits sweep in lens numbering; the paper's hidden-state indices map by <see cref="HiddenStateMapping"/>.
/// </summary>
[JsonConverter(typeof(LayerSelectionConverter))]
internal sealed record LayerSelection(IReadOnlyList<int>? Layers)
{
    public static readonly LayerSelection All = new((IReadOnlyList<int>?)null);
    public bool IsAll => Layers is null;
    public override string ToString() => Layers is null ? "all" : string.Join(",", Layers);

    public static LayerSelection Range(int from, int to, int step)
    {
        if (step <= 0) throw new LensException($"layer range step must be positive, got {step}");
        if (to < from) throw new LensException($"layer range {from}..{to} is empty");
        var l = new List<int>();
        for (int i = from; i <= to; i += step) l.Add(i);
        return new LayerSelection(l);
    }
}

internal sealed class LayerSelectionConverter : JsonConverter<LayerSelection>
{
    public override LayerSelection Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.String:
                var s = reader.GetString();
                if (s == "all") return LayerSelection.All;
                throw new JsonException($"layers: '{s}' is not \"all\", a list of layer numbers or {{\"from\", \"to\", \"step\"}}");
            case JsonTokenType.StartArray:
                var list = JsonSerializer.Deserialize<int[]>(ref reader) ?? Array.Empty<int>();
                if (list.Length == 0) throw new JsonException("layers: the list is empty");
                if (list.Any(l => l < 0)) throw new JsonException("layers: negative layer number");
                for (int i = 1; i < list.Length; i++)
                    if (list[i] <= list[i - 1]) throw new JsonException("layers: the list must be strictly increasing");
                return new LayerSelection(list);
            case JsonTokenType.StartObject:
                using (var doc = JsonDocument.ParseValue(ref reader))
                {
                    var o = doc.RootElement;
                    foreach (var p in o.EnumerateObject())
                        if (p.Name is not ("from" or "to" or "step")) throw new JsonException($"layers: unknown key '{p.Name}'");
                    if (!o.TryGetProperty("from", out var f) || !o.TryGetProperty("to", out var t))
                        throw new JsonException("layers: a range needs \"from\" and \"to\"");
                    int step = o.TryGetProperty("step", out var st) ? st.GetInt32() : 1;
                    try { return LayerSelection.Range(f.GetInt32(), t.GetInt32(), step); }
                    catch (LensException e) { throw new JsonException("layers: " + e.Message); }
                }
            default:
                throw new JsonException("layers: expected \"all\", a list of layer numbers or a range object");
        }
    }

    public override void Write(Utf8JsonWriter writer, LayerSelection value, JsonSerializerOptions options)
    {
        if (value.Layers is null) writer.WriteStringValue("all");
        else JsonSerializer.Serialize(writer, value.Layers.ToArray(), options);
    }
}

/// <summary>A figure the claim comes from, as published (not computed here).</summary>
internal sealed record PublishedFigure
{
    /// <summary>"order_counts" (first-before-second vs second-before-first over prompt-seed cases) or
    /// "prompt_seeds" (how many seeds of one prompt showed <see cref="Concept"/> first, from which hidden-state index)</summary>
    public string Kind { get; init; } = "";
    /// <summary>key into the file's sources</summary>
    public string Source { get; init; } = "";
    /// <summary>the model the figure was measured on (e.g. "SD 2.1", "IF-I-XL")</summary>
    public string Model { get; init; } = "";
    public string? Prompt { get; init; }
    public string? Concept { get; init; }
    public int? FirstBeforeSecond { get; init; }
    public int? SecondBeforeFirst { get; init; }
    public int? SeedsPerPrompt { get; init; }
    public int? Seeds { get; init; }
    public int? OfSeeds { get; init; }
    public int? HiddenStateIndex { get; init; }
    public string? Text { get; init; }

    public string Describe() => Kind switch
    {
        "order_counts" => $"{Model}: first noun before second in {FirstBeforeSecond} prompt-seed cases, second before first in {SecondBeforeFirst} ({SeedsPerPrompt} seeds per prompt)",
        "prompt_seeds" => $"{Model}, \"{Prompt}\": '{Concept}' first in {Seeds}/{OfSeeds} seeds, from hidden-state index {HiddenStateIndex}",
        _ => Text ?? Kind,
    };
}

internal sealed record SourceRef
{
    public string Title { get; init; } = "";
    public string? Url { get; init; }
    public string? Note { get; init; }
}

/// <summary>Analysis parameters as written in the claims file (all optional; missing ones come from the defaults).</summary>
internal sealed record AnalysisSpec
{
    public PresenceMetric? Metric { get; init; }
    public double? Threshold { get; init; }
    public EmergenceRule? Rule { get; init; }
    public double? MinFraction { get; init; }

    public AnalysisOptions Over(AnalysisOptions b) => new()
    {
        Metric = Metric ?? b.Metric,
        Threshold = Threshold ?? b.Threshold,
        Rule = Rule ?? b.Rule,
        MinFraction = MinFraction ?? b.MinFraction,
    };
}

internal sealed record ClaimDefaults
{
    public string Template { get; init; } = ClipJudge.DefaultTemplate;
    public AnalysisSpec Analysis { get; init; } = new();
    /// <summary>CLIP judge folder, relative to the claims file (optional)</summary>
    public string? JudgeDir { get; init; }
    /// <summary>environment variable naming the CLIP judge folder when neither --clip nor judge_dir gives one</summary>
    public string JudgeEnv { get; init; } = "LENS_CLIP_DIR";
    public string Device { get; init; } = "cpu";
}

/// <summary>One claim: what to run (model, prompts, seeds, layers, sampler settings) and what is expected.</summary>
internal sealed record Claim
{
    public string Id { get; init; } = "";
    public string Title { get; init; } = "";
    public string Statement { get; init; } = "";
    /// <summary>"sd" (Stable Diffusion, CLIP text encoder), "sdxl" (Stable Diffusion XL, the tutorial's lens of its second
    /// CLIP encoder), "if" (DeepFloyd IF stage I, T5 encoder) or "flux" (FLUX, the tutorial's lens of its T5 encoder)</summary>
    public string Model { get; init; } = "";
    /// <summary>a human name of the checkpoint, e.g. "runwayml/stable-diffusion-v1-5"</summary>
    public string? ModelName { get; init; }
    /// <summary>environment variable holding the diffusers folder (checked first)</summary>
    public string? ModelEnv { get; init; }
    /// <summary>diffusers folder relative to the claims file (used when model_env is unset or not set)</summary>
    public string? ModelDir { get; init; }
    /// <summary>weights variant of the model (e.g. "fp16", as diffusers' variant=); overrides lens audit --variant</summary>
    public string? Variant { get; init; }
    public IReadOnlyList<string> Prompts { get; init; } = Array.Empty<string>();
    public string NegativePrompt { get; init; } = "";
    /// <summary>the concepts in prompt order; the first two define the order</summary>
    public IReadOnlyList<string> Concepts { get; init; } = Array.Empty<string>();
    public IReadOnlyList<string> Distractors { get; init; } = Array.Empty<string>();
    public string? Template { get; init; }
    public IReadOnlyList<long> Seeds { get; init; } = Array.Empty<long>();
    public ConceptOrder ExpectedOrder { get; init; }
    public LayerSelection Layers { get; init; } = LayerSelection.All;
    public int? Steps { get; init; }
    public double? Guidance { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
    public bool? CleanCaption { get; init; }
    /// <summary>the scheduler to run instead of the model's own (a diffusers class name or alias, as lens sweep
    /// --scheduler; e.g. "dpm++" for the paper's DPMSolverMultistepScheduler); null: the model's own</summary>
    public string? Scheduler { get; init; }
    /// <summary>"reseed" (default) or "continue" (one generator through the layers, as the paper's original code)</summary>
    public string? SeedPolicy { get; init; }
    /// <summary>DeepFloyd IF only: a human name of the stage II (super-resolution) checkpoint run on every layer's
    /// stage I image, e.g. "DeepFloyd/IF-II-L-v1.0"; the judge then scores the stage II images (lens sweep --stage2)</summary>
    public string? Stage2ModelName { get; init; }
    /// <summary>environment variable holding the stage II diffusers folder (checked first)</summary>
    public string? Stage2ModelEnv { get; init; }
    /// <summary>stage II diffusers folder relative to the claims file (used when stage2_model_env is unset or not set)</summary>
    public string? Stage2ModelDir { get; init; }
    /// <summary>stage II denoising steps (lens sweep --stage2-steps; null: diffusers' 50)</summary>
    public int? Stage2Steps { get; init; }
    /// <summary>stage II guidance (--stage2-guidance; null: diffusers' 4.0)</summary>
    public double? Stage2Guidance { get; init; }
    /// <summary>the noise level of the upscaled stage I image (--noise-level; null: diffusers' 250)</summary>
    public int? Stage2NoiseLevel { get; init; }
    /// <summary>stage II's denoising scheduler (--stage2-scheduler: a class name or alias); null: the stage II folder's
    /// own (IF-II-L: DDPMScheduler). "scheduler" is stage I's only, as the paper's code replaces stage I's alone</summary>
    public string? Stage2Scheduler { get; init; }
    /// <summary>Whether the claim runs a stage II (names its folder).</summary>
    [JsonIgnore] public bool HasStage2 => Stage2ModelEnv is not null || Stage2ModelDir is not null;
    public AnalysisSpec? Analysis { get; init; }
    public IReadOnlyList<PublishedFigure> Published { get; init; } = Array.Empty<PublishedFigure>();
    public string? Note { get; init; }
    /// <summary>prompts (and their two nouns as the concepts) from a CSV in the paper's format instead of
    /// <see cref="Prompts"/> and <see cref="Concepts"/></summary>
    public PromptSetSpec? PromptSet { get; init; }
}

/// <summary><c>fixtures/claims/*.json</c>: the paper's claims as data.</summary>
internal sealed record ClaimsFile
{
    public string Format { get; init; } = "";
    public string Description { get; init; } = "";
    public ClaimDefaults Defaults { get; init; } = new();
    public IReadOnlyDictionary<string, SourceRef> Sources { get; init; } = new Dictionary<string, SourceRef>();
    public IReadOnlyList<Claim> Claims { get; init; } = Array.Empty<Claim>();

    /// <summary>The file it was read from (set by <see cref="Load"/>).</summary>
    [JsonIgnore] public string Path { get; init; } = "";
    [JsonIgnore] public string Folder => System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path)) ?? ".";

    public const string FormatName = "lens-claims/1";

    public static ClaimsFile Load(string path)
    {
        var file = FindingsJson.Read<ClaimsFile>(path, "claims file") with { Path = path };
        file.Validate();
        return file;
    }

    public AnalysisOptions BaseAnalysis => Defaults.Analysis.Over(new AnalysisOptions());
    public AnalysisOptions AnalysisFor(Claim c) => (c.Analysis ?? new AnalysisSpec()).Over(BaseAnalysis);
    public string TemplateFor(Claim c) => c.Template ?? Defaults.Template;

    public void Validate()
    {
        string w = Path.Length > 0 ? Path : "claims file";
        if (Format != FormatName) throw new LensException($"{w}: format must be '{FormatName}', got '{Format}'");
        if (Claims.Count == 0) throw new LensException($"{w}: no claims");
        BaseAnalysis.Validate($"{w}: defaults.analysis");
        var ids = new HashSet<string>();
        foreach (var c in Claims)
        {
            string where = $"{w}: claim '{c.Id}'";
            if (string.IsNullOrWhiteSpace(c.Id) || !System.Text.RegularExpressions.Regex.IsMatch(c.Id, "^[a-z0-9][a-z0-9._-]*$"))
                throw new LensException($"{w}: claim id '{c.Id}' must be lower-case letters, digits, '.', '_' or '-'");
            if (!ids.Add(c.Id)) throw new LensException($"{w}: claim id '{c.Id}' is used twice");
            if (c.Model is not ("sd" or "sdxl" or "if" or "flux")) throw new LensException($"{where}: model must be \"sd\", \"sdxl\", \"if\" or \"flux\", got '{c.Model}'");
            if (c.ModelEnv is null && c.ModelDir is null) throw new LensException($"{where}: needs model_env or model_dir");
            if (c.PromptSet is { } ps)
            {
                ps.Validate(where);
                if (c.Prompts.Count > 0 || c.Concepts.Count > 0)
                    throw new LensException($"{where}: a claim with prompt_set takes its prompts and concepts (noun_0, noun_1) from the file; drop prompts and concepts");
            }
            else
            {
                if (c.Prompts.Count == 0 || c.Prompts.Any(string.IsNullOrWhiteSpace)) throw new LensException($"{where}: needs non-empty prompts");
                if (c.Concepts.Count < 2) throw new LensException($"{where}: needs at least two concepts (the first two are ordered)");
                try { ConceptSet.Validate(c.Concepts, c.Distractors); }
                catch (LensException e) { throw new LensException($"{where}: {e.Message}"); }
            }
            if (c.Seeds.Count == 0) throw new LensException($"{where}: no seeds");
            if (c.Seeds.Distinct().Count() != c.Seeds.Count) throw new LensException($"{where}: a seed is listed twice");
            if (c.ExpectedOrder == ConceptOrder.Neither) throw new LensException($"{where}: expected_order must be first, second or simultaneous");
            if (c.Steps is <= 0) throw new LensException($"{where}: steps must be positive");
            if (c.Guidance is { } g && !double.IsFinite(g)) throw new LensException($"{where}: guidance must be a number");
            if (c.Scheduler is { } sched)
            {
                try { Schedulers.Scheduler.ResolveClassName(sched); }
                catch (LensException e) { throw new LensException($"{where}: scheduler: {e.Message}"); }
            }
            if (c.SeedPolicy is not (null or "reseed" or "continue"))
                throw new LensException($"{where}: seed_policy must be \"reseed\" or \"continue\", got '{c.SeedPolicy}'");
            ValidateStage2(c, where);
            AnalysisFor(c).Validate(where);
            try { ClipJudge.ConceptText(TemplateFor(c), "x"); }
            catch (LensException e) { throw new LensException($"{where}: {e.Message}"); }
            foreach (var p in c.Published)
            {
                if (p.Kind is not ("order_counts" or "prompt_seeds" or "text"))
                    throw new LensException($"{where}: published figure kind '{p.Kind}' is not order_counts, prompt_seeds or text");
                if (!Sources.ContainsKey(p.Source)) throw new LensException($"{where}: published figure cites unknown source '{p.Source}'");
                if (p.Kind == "order_counts" && (p.FirstBeforeSecond is null || p.SecondBeforeFirst is null))
                    throw new LensException($"{where}: order_counts needs first_before_second and second_before_first");
                if (p.Kind == "prompt_seeds" && (p.Prompt is null || p.Concept is null || p.Seeds is null || p.OfSeeds is null || p.Seeds > p.OfSeeds))
                    throw new LensException($"{where}: prompt_seeds needs prompt, concept and seeds <= of_seeds");
            }
        }
    }

    /// <summary>
    /// The stage II fields: only on a DeepFloyd IF claim ("model": "if"); stage2_steps, stage2_guidance,
    /// stage2_noise_level and stage2_scheduler only with a stage II folder (stage2_model_env or stage2_model_dir); their values as lens
    /// sweep checks them (the noise level's upper bound is the model's, checked by the sweep).
    /// </summary>
    private static void ValidateStage2(Claim c, string where)
    {
        var given = new (bool, string)[]
        {
            (c.Stage2ModelName is not null, "stage2_model_name"), (c.Stage2ModelEnv is not null, "stage2_model_env"),
            (c.Stage2ModelDir is not null, "stage2_model_dir"), (c.Stage2Steps is not null, "stage2_steps"),
            (c.Stage2Guidance is not null, "stage2_guidance"), (c.Stage2NoiseLevel is not null, "stage2_noise_level"),
            (c.Stage2Scheduler is not null, "stage2_scheduler"),
        }.Where(x => x.Item1).Select(x => x.Item2).ToList();
        if (given.Count == 0) return;
        if (c.Model != "if")
            throw new LensException($"{where}: {string.Join(", ", given)} appl{(given.Count == 1 ? "ies" : "y")} to a DeepFloyd IF stage II only (\"model\": \"if\"); this claim's model is '{c.Model}'");
        if (!c.HasStage2)
            throw new LensException($"{where}: {string.Join(", ", given)} need{(given.Count == 1 ? "s" : "")} the stage II folder: stage2_model_env or stage2_model_dir");
        if (c.Stage2Steps is <= 0) throw new LensException($"{where}: stage2_steps must be positive");
        if (c.Stage2Guidance is { } g && !double.IsFinite(g)) throw new LensException($"{where}: stage2_guidance must be a number");
        if (c.Stage2NoiseLevel is < 0) throw new LensException($"{where}: stage2_noise_level must be at least 0");
        if (c.Stage2Scheduler is { } sched)
        {
            try { Schedulers.Scheduler.ResolveClassName(sched); }
            catch (LensException e) { throw new LensException($"{where}: stage2_scheduler: {e.Message}"); }
        }
    }

    /// <summary>The claim's stage II folder (null, null without a stage II): the stage2_model_env variable if set, else
    /// stage2_model_dir relative to the claims file; null with the reason when neither gives one.</summary>
    public (string? Dir, string? Reason) ResolveStage2Dir(Claim c, Func<string, string?> getEnv)
    {
        if (!c.HasStage2) return (null, null);
        if (c.Stage2ModelEnv is { } env && getEnv(env) is { Length: > 0 } fromEnv)
            return Directory.Exists(fromEnv) ? (fromEnv, null) : (null, $"{env}={fromEnv} is not a folder");
        if (c.Stage2ModelDir is { } rel)
        {
            var dir = System.IO.Path.GetFullPath(System.IO.Path.Combine(Folder, rel));
            return Directory.Exists(dir) ? (dir, null) : (null, $"stage II model folder {dir} not found");
        }
        return (null, $"{c.Stage2ModelEnv} is not set (a diffusers folder of the stage II {c.Stage2ModelName ?? "super-resolution model"})");
    }

    /// <summary>The claim's diffusers folder: the model_env variable if set, else model_dir relative to the claims
    /// file; null with the reason when neither gives one.</summary>
    public (string? Dir, string? Reason) ResolveModelDir(Claim c, Func<string, string?> getEnv)
    {
        if (c.ModelEnv is { } env && getEnv(env) is { Length: > 0 } fromEnv)
            return Directory.Exists(fromEnv) ? (fromEnv, null) : (null, $"{env}={fromEnv} is not a folder");
        if (c.ModelDir is { } rel)
        {
            var dir = System.IO.Path.GetFullPath(System.IO.Path.Combine(Folder, rel));
            return Directory.Exists(dir) ? (dir, null) : (null, $"model folder {dir} not found");
        }
        return (null, $"{c.ModelEnv} is not set (a diffusers folder of {c.ModelName ?? c.Model})");
    }
}
