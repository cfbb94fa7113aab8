using DiffusionLens.Reports;
using System.Reflection;
using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Tests.Findings;

internal static class Repo
{
    private static string? _root;

    /// <summary>The repository root (the folder holding DiffusionLens.sln).</summary>
    public static string Root => _root ??= Find();

    private static string Find()
    {
        // LENS_REPO_ROOT: a published test app run away from the repository (ci/gpu-test.sh, ci/gpu-pack-judge.sh)
        var env = Environment.GetEnvironmentVariable("LENS_REPO_ROOT");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(Path.Combine(env, "fixtures"))) return Path.GetFullPath(env);
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DiffusionLens.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (DiffusionLens.sln) not found above " + AppContext.BaseDirectory);
    }

    public static string PathOf(params string[] parts) => Path.Combine(new[] { Root }.Concat(parts).ToArray());

    public static string TinyClipDir => PathOf("fixtures", "judge", "tiny-clip");

    /// <summary>Skips the test unless the tiny CLIP fixture (made by fixtures/export_clip_onnx.py --tiny) exists.</summary>
    public static void RequireTinyClip()
    {
        if (!File.Exists(Path.Combine(TinyClipDir, "judge.json")))
            Assert.Skip($"fixture {TinyClipDir} is absent: make it with `python fixtures/export_clip_onnx.py --tiny fixtures/judge/tiny-clip --tokenizer-dir fixtures/models/sd-tiny-12/tokenizer --share-tokenizer`");
    }
}

internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lens-findings-" + Guid.NewGuid().ToString("N")[..10]);
    public TempDir() => Directory.CreateDirectory(Path);
    public string Sub(params string[] parts) => System.IO.Path.Combine(new[] { Path }.Concat(parts).ToArray());
    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// A sweep that writes synthetic layer images: a 24x24 PNG per layer whose red channel encodes the "people" score
/// and green the "ocean" score given by <see cref="Curves"/> for (prompt, seed, layer).
/// </summary>
internal sealed class FakeSweepRunner : ISweepRunner
{
    public List<SweepRequest> Requests { get; } = new();
    public int LayerCount { get; init; } = 12;
    public Func<string, long, int, (double People, double Ocean)> Curves { get; init; } = (_, _, _) => (0.5, 0.5);
    public Func<SweepRequest, bool>? FailWhen { get; init; }

    public SweepOutput Run(SweepRequest request)
    {
        Requests.Add(request);
        if (FailWhen?.Invoke(request) == true) throw new LensException($"fake sweep failure for seed {request.Seed}");
        var layers = request.Layers ?? Enumerable.Range(0, LayerCount).ToArray();
        var images = new Dictionary<int, string>();
        foreach (var l in layers)
        {
            var (p, o) = Curves(request.Prompt, request.Seed, l);
            var px = new byte[24 * 24 * 3];
            for (int i = 0; i < 24 * 24; i++)
            {
                px[3 * i] = (byte)Math.Round(p * 255);
                px[3 * i + 1] = (byte)Math.Round(o * 255);
                px[3 * i + 2] = (byte)((i * 7 + l * 13) % 256);
            }
            var path = Path.Combine(request.OutDir, $"layer-{l:D2}.png");
            new RgbImage(24, 24, px).SavePng(path);
            images[l] = path;
        }
        return new SweepOutput { OutDir = request.OutDir, LayerImages = images };
    }
}

/// <summary>A judge that reads the synthetic images back: prob of the first concept = mean red / 255, of the second
/// = mean green / 255, of any further label 0.1; cosine = prob * 0.3.</summary>
internal sealed class FakeJudge : IConceptJudge
{
    public JudgeScores Score(IReadOnlyList<LayerImage> images, IReadOnlyList<string> concepts, string template = ClipJudge.DefaultTemplate,
        IReadOnlyList<string>? distractors = null)
    {
        var labels = ConceptSet.Validate(concepts, distractors);
        var layers = images.Select(im =>
        {
            var img = RgbImage.Load(im.Path);
            double r = 0, g = 0;
            for (int i = 0; i < img.Width * img.Height; i++) { r += img.Pixels[3 * i]; g += img.Pixels[3 * i + 1]; }
            r /= img.Width * img.Height * 255.0;
            g /= img.Width * img.Height * 255.0;
            var prob = labels.Select((_, i) => i == 0 ? r : i == 1 ? g : 0.1).ToArray();
            return new LayerScore { Layer = im.Layer, Image = Path.GetFileName(im.Path), Prob = prob, Cosine = prob.Select(p => p * 0.3).ToArray() };
        }).ToList();
        return new JudgeScores
        {
            Judge = new JudgeInfo { Source = "fake judge", LogitScale = 1, ImageSize = 24 },
            Template = template,
            Concepts = concepts.ToArray(),
            Distractors = (distractors ?? Array.Empty<string>()).ToArray(),
            Texts = labels.Select(l => ClipJudge.ConceptText(template, l)).ToArray(),
            Layers = layers,
        };
    }
}

/// <summary>Finds implementations merged from other branches (sweep adapter, CLIP tokenizer) by reflection, so the
/// tests that need them run once they exist and are skipped with a reason before.</summary>
internal static class Discovery
{
    private static IEnumerable<Type> LensTypes()
    {
        var asms = new[] { typeof(ClipJudge).Assembly, typeof(DiffusionLens.Cli.Commands.JudgeCommand).Assembly };
        return asms.SelectMany(a =>
        {
            try { return a.GetTypes(); }
            catch (ReflectionTypeLoadException e) { return e.Types.Where(t => t is not null).Cast<Type>(); }
        });
    }

    public static ISweepRunner? SweepRunner()
    {
        var t = LensTypes().FirstOrDefault(t => typeof(ISweepRunner).IsAssignableFrom(t) && !t.IsAbstract && !t.IsInterface && t.GetConstructor(Type.EmptyTypes) is not null);
        return t is null ? null : (ISweepRunner)Activator.CreateInstance(t)!;
    }

    /// <summary>A tokenizer factory over a type named ClipTokenizer with static FromFolder(string) and Encode(string).</summary>
    public static Func<string, ITextTokenizer>? ClipTokenizer()
    {
        var t = LensTypes().FirstOrDefault(t => t.Name == "ClipTokenizer");
        var from = t?.GetMethod("FromFolder", BindingFlags.Public | BindingFlags.Static, new[] { typeof(string) });
        var encode = t?.GetMethod("Encode", BindingFlags.Public | BindingFlags.Instance, new[] { typeof(string) });
        if (from is null || encode is null) return null;
        return dir =>
        {
            var tok = from.Invoke(null, new object[] { dir })!;
            return new DelegateTokenizer(text =>
            {
                var r = encode.Invoke(tok, new object[] { text })!;
                var f = r.GetType().GetFields();
                return ((long[])f[0].GetValue(r)!, (long[])f[1].GetValue(r)!);
            });
        };
    }
}
