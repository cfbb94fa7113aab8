using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using DiffusionLens.Sweep;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// <c>lens sweep --stage2</c> with stage I and/or stage II under another scheduler than the models' own DDPMScheduler,
/// against real diffusers. References: fixtures/references-if2-schedulers/&lt;stage I&gt;-&lt;stage II&gt;-&lt;reseed|continue&gt;/
/// (dpm++-ddpm: the paper's setup, DPM-Solver++ on stage I only as its code switches it; dpm++-dpm++; ddpm-dpm++) and
/// rejected.json, made by <c>python3 fixtures/make_reference.py if2 --schedulers</c> from the committed if-tiny-b +
/// if2-tiny, CPU float32: per layer in order, stage I IFPipeline(output_type="pt") then stage II on that image with the
/// same embeddings and generator, each pipeline's scheduler the model's own or <c>SchedulerClass.from_config(
/// pipe.scheduler.config)</c>; reseed seeds a generator for every layer, continue passes one from call to call. (Both
/// stages under their own scheduler: <see cref="Stage2ParityTests"/>, <see cref="Stage2SeedParityTests"/>.)
/// <c>--scheduler</c> is stage I's only and <c>--stage2-scheduler</c> stage II's, as diffusers' pipelines each have
/// their own scheduler. Tolerances: timesteps exactly, the effective scheduler configs as SchedulerParityTests; every
/// stage II and stage I image within the reference's 8-bit levels (CPU: 2) of diffusers' PNG, swept with one layer per
/// batch and with all layers in one batch. Skipped, naming the folder and the command, until recorded.
/// </summary>
[Collection("pipelines")]
public class Stage2SchedulerParityTests
{
    private readonly ITestOutputHelper _out;
    public Stage2SchedulerParityTests(ITestOutputHelper output) => _out = output;

    public static string RefsDir => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-if2-schedulers");
    private const string Recording = "run `python3 fixtures/make_reference.py if2 --schedulers` with real diffusers (CPU float32) and commit fixtures/references-if2-schedulers/";

    /// <summary>make_reference.py's IF2_SCHEDULER_PAIRS x IF2_SCHEDULER_POLICIES, as its folder names: stage I's and
    /// stage II's scheduler alias (ddpm: the model's own), the seed policy.</summary>
    public static TheoryData<string, string, string> Cases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (s1, s2) in new[] { ("dpm++", "ddpm"), ("dpm++", "dpm++"), ("ddpm", "dpm++") })
            foreach (var p in new[] { "reseed", "continue" })
                data.Add(s1, s2, p);
        return data;
    }

    private static ReferenceData OpenOrSkip(string folderName)
    {
        var folder = Path.Combine(RefsDir, folderName);
        var r = ReferenceData.OpenRecordedOrSkip(folder, Recording);
        r.SkipIfUnavailable();
        Assert.Equal("if2-schedulers", r.Kind);
        return r;
    }

    private static string Stage1Path(ReferenceData r) => Path.Combine(ReferenceData.RepoRoot, r.Json["stage1"]!["path"]!.GetValue<string>());

    /// <summary>A stage's scheduler built here as the sweep builds it (the folder's config, the option's class) against
    /// diffusers': class, timesteps and effective config.</summary>
    private void CheckScheduler(ReferenceData r, string stage, string modelDir, string? option, int steps)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(modelDir, "scheduler", "scheduler_config.json"));
        using var s = Scheduler.FromConfig(cfg, option is null ? null : Scheduler.ResolveClassName(option));
        Assert.Equal(r.Json[$"{stage}_scheduler"]!.GetValue<string>(), s.ClassName);
        s.SetTimesteps(steps);
        Assert.Equal(r.ReadLongs($"{stage}.timesteps"), s.Timesteps);
        SchedulerParityTests.CheckEffectiveConfig(s, r.Json[$"{stage}_scheduler_config"]!.AsObject(), cfg.Root);
        _out.WriteLine($"{stage}: {s.ClassName}, timesteps [{string.Join(", ", s.Timesteps)}]");
    }

    [Theory, MemberData(nameof(Cases))]
    public void TwoStageSweepMatchesDiffusers(string stage1Scheduler, string stage2Scheduler, string policy)
    {
        using var r = OpenOrSkip($"{stage1Scheduler}-{stage2Scheduler}-{policy}");
        // the options the sweep gets: null where diffusers ran the pipeline's own scheduler
        var opt1 = r.Json["stage1_scheduler_option"]?.GetValue<string>();
        var opt2 = r.Json["stage2_scheduler_option"]?.GetValue<string>();
        Assert.Equal(stage1Scheduler, opt1 ?? "ddpm");
        Assert.Equal(stage2Scheduler, opt2 ?? "ddpm");
        Assert.Equal(policy, r.Json["seed_policy"]!.GetValue<string>());
        // stage I's weights too are the ones diffusers ran (stage II's: ReferenceData.ModelPath)
        ReferenceWeights.Verify(r.Name + " (stage I)", "if", Stage1Path(r), r.Json["stage1"]!["weights_sha256"]!.AsObject(), r.Json["stage1"]!["variant"]?.GetValue<string>());
        var s2 = r.Json["stage2"]!;
        int steps2 = s2["steps"]!.GetValue<int>();
        CheckScheduler(r, "stage1", Stage1Path(r), opt1, r.Steps);
        CheckScheduler(r, "stage2", r.ModelPath!, opt2, steps2);

        int[] layers = r.Layers;
        foreach (int batch in new[] { 1, layers.Length })
        {
            var outDir = CliRunner.TempPath($"if2-sched-{stage1Scheduler}-{stage2Scheduler}-{policy}-b{batch}");
            try
            {
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = Stage1Path(r), Prompt = r.Prompt, NegativePrompt = r.NegativePrompt, Seed = r.Seed, Steps = r.Steps,
                    Guidance = r.Guidance, Height = r.Height, Width = r.Width, CleanCaption = r.Json["clean_caption"]!.GetValue<bool>(),
                    Layers = string.Join(",", layers), SeedPolicy = policy, Batch = batch, OutDir = outDir, Scheduler = opt1,
                    Stage2Dir = r.ModelPath, Stage2Steps = steps2, Stage2Guidance = s2["guidance"]!.GetValue<double>(),
                    NoiseLevel = s2["noise_level"]!.GetValue<int>(), Stage2Scheduler = opt2,
                });
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal(r.Json["stage1_scheduler"]!.GetValue<string>(), m["scheduler"]!.GetValue<string>());
                Assert.Equal(r.Json["stage2_scheduler"]!.GetValue<string>(), m["stage2"]!["scheduler"]!.GetValue<string>());
                Assert.Equal(policy, m["seed_policy"]!.GetValue<string>());
                foreach (var l in layers)
                    foreach (var (mine, kind) in new[] { (m["files"]![l.ToString()]!.GetValue<string>(), "layers"), (m["stage1_files"]![l.ToString()]!.GetValue<string>(), "stage1") })
                    {
                        var theirs = r.Json["images"]![kind]![l.ToString()]!.GetValue<string>();
                        var a = RgbImage.Load(Path.Combine(outDir, mine));
                        var e = RgbImage.Load(Path.Combine(r.Folder, theirs));
                        Assert.Equal((e.Width, e.Height), (a.Width, a.Height));
                        int worst = a.Pixels.Zip(e.Pixels, (x, y) => Math.Abs(x - y)).Max();
                        _out.WriteLine($"{r.Name} batch {batch} {mine}: {worst} levels from diffusers' {theirs}");
                        Assert.True(worst <= r.Tol.ImageLevels, $"{r.Name} batch {batch} {mine}: {worst} levels from diffusers' {theirs} (tolerance {r.Tol.ImageLevels})");
                    }
            }
            finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
        }
    }

    /// <summary>
    /// DDIM, Euler and PNDM on either stage: diffusers' call fails (from_config keeps IF's variance_type learned_range,
    /// so the pipeline hands step() the predicted variance too), and the sweep refuses them from the config files,
    /// before any weights load, naming the option. Fails if diffusers ran one: the refusal would then be wrong.
    /// </summary>
    [Fact]
    public void SchedulersDiffusersCannotRunAreRefusedBeforeLoading()
    {
        var file = Path.Combine(RefsDir, "rejected.json");
        if (!File.Exists(file)) Assert.Skip($"{file} is not recorded yet: {Recording}");
        var j = JsonNode.Parse(File.ReadAllText(file))!;
        var cases = j["cases"]!.AsArray();
        Assert.NotEmpty(cases);
        foreach (var c in cases)
        {
            string stage = c!["stage"]!.GetValue<string>(), cls = c["scheduler"]!.GetValue<string>(), option = c["option"]!.GetValue<string>();
            Assert.True(c["failed"]!.GetValue<bool>(), $"diffusers ran {stage} under {cls}, which the sweep refuses: the refusal is wrong");
            Assert.Equal("learned_range", c["config_variance_type"]?.GetValue<string>());
            var message = c["message"]!.GetValue<string>();
            _out.WriteLine($"{stage} {cls}: diffusers {c["error"]}: {message}");
            // the cause: torch's broadcast error between the 3-channel sample and the 6-channel prediction
            Assert.True(message.Contains("must match the size of tensor", StringComparison.Ordinal),
                $"diffusers failed {stage} under {cls} for another reason than the predicted variance's shape: {c["error"]}: {message}");
            var e = Assert.Throws<LensException>(() => LensSweep.Validate(new SweepOptions
            {
                ModelDir = Path.Combine(ReferenceData.RepoRoot, j["stage1"]!["path"]!.GetValue<string>()), Prompt = "x",
                OutDir = CliRunner.TempPath("unused"), Stage2Dir = Path.Combine(ReferenceData.RepoRoot, j["model"]!["path"]!.GetValue<string>()),
                Scheduler = stage == "stage1" ? option : null, Stage2Scheduler = stage == "stage2" ? option : null,
            }));
            Assert.Contains($"{cls} cannot run this IF", e.Message);
            if (stage == "stage2") Assert.StartsWith("--stage2-scheduler", e.Message);
        }
    }
}
