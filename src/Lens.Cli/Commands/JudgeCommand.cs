using System.Globalization;
using DiffusionLens.Findings;
using DiffusionLens.Judge;
using DiffusionLens.Reports;
using DiffusionLens.Tokenizers;

namespace DiffusionLens.Cli.Commands;

/// <summary><c>lens judge</c>: scores every layer-XX.png of a sweep folder for concepts with the CLIP judge.</summary>
internal sealed class JudgeCommand : ICommand
{
    public const string ClipEnv = "LENS_CLIP_DIR";

    private readonly Func<string, ITextTokenizer> _tokenizerForFolder;

    /// <summary>The real command: the judge's CLIP BPE tokenizer (judge.json tokenizer_folder, else the judge folder's vocab.json + merges.txt).</summary>
    public JudgeCommand() : this(ClipTokenizer.FromFolder) { }

    /// <param name="tokenizerForFolder">builds the judge's tokenizer from its folder (tests pass a fake)</param>
    public JudgeCommand(Func<string, ITextTokenizer> tokenizerForFolder) => _tokenizerForFolder = tokenizerForFolder;


    public string Name => "judge";
    public string Summary => "score a sweep's layer images for concepts with a CLIP judge (ONNX)";
    public string Usage => $@"usage: lens judge --images DIR --concepts ""people,ocean"" [options]

Scores every layer-XX.png in DIR with an independent CLIP model: per layer and concept the cosine similarity of
image and text embeddings and the softmax probability over the concepts of logit_scale * cosine. Writes
scores.json and scores.svg (probability and cosine per layer).

options:
  --images DIR          sweep folder with layer-XX.png images (required)
  --concepts LIST       comma-separated concepts, in prompt order (required)
  --distractors LIST    extra comma-separated labels that join the softmax but are not analysed
  --template TEXT       text for each concept, '{{}}' replaced by it (default ""{ClipJudge.DefaultTemplate}"")
  --clip DIR            CLIP judge folder made by fixtures/export_clip_onnx.py (default: ${ClipEnv})
  --out DIR             where to write scores.json and scores.svg (default: the images folder)
  --threshold P         draw this presence threshold and the emergence layers (rule 'stay') on the plot
  --judge-device D      cpu (default) or cuda (needs ONNX Runtime's CUDA execution provider)
  --batch-size N        images per encoder call (default 16)";

    public static string ResolveClipDir(string? option, string? fallback = null)
    {
        if (!string.IsNullOrEmpty(option)) return option;
        if (!string.IsNullOrEmpty(fallback)) return fallback;
        var env = Environment.GetEnvironmentVariable(ClipEnv);
        if (!string.IsNullOrEmpty(env)) return env;
        throw new LensException($"no CLIP judge: pass --clip DIR (a folder made by fixtures/export_clip_onnx.py) or set {ClipEnv}");
    }

    public int Run(IReadOnlyList<string> args)
    {
        var a = CliArgs.Parse(Name, args, new[] { "images", "concepts", "distractors", "template", "clip", "out", "threshold", "judge-device", "batch-size" });
        var imagesDir = a.Require("images");
        var concepts = ConceptSet.ParseList(a.Require("concepts"));
        var distractors = ConceptSet.ParseList(a.Get("distractors"));
        ConceptSet.Validate(concepts, distractors);
        var template = a.Get("template", ClipJudge.DefaultTemplate);
        ClipJudge.ConceptText(template, "x");
        var outDir = a.Get("out", imagesDir);
        var threshold = a.DoubleOrNull("threshold");
        var clipDir = ResolveClipDir(a.Get("clip"));
        var images = SweepImages.Find(imagesDir);

        using var judge = ClipJudge.Load(clipDir, _tokenizerForFolder(JudgeConfig.Load(clipDir).TokenizerFolder), a.Get("judge-device", "cpu"), a.Int("batch-size", 16));
        var scores = judge.Score(images, concepts, template, distractors);

        AnalysisOptions? analysis = null;
        Dictionary<string, int?>? emergence = null;
        if (threshold is { } t)
        {
            analysis = new AnalysisOptions { Threshold = t };
            analysis.Validate("--threshold");
            emergence = concepts.ToDictionary(c => c, c => Emergence.Layer(scores.LayerNumbers, scores.Curve(c), analysis));
        }
        Directory.CreateDirectory(outDir);
        var jsonPath = Path.Combine(outDir, "scores.json");
        var svgPath = Path.Combine(outDir, "scores.svg");
        scores.Save(jsonPath);
        File.WriteAllText(svgPath, SvgCharts.ScoresDocument(scores, analysis, emergence));

        var labels = scores.Labels;
        Console.WriteLine($"layer  " + string.Join("  ", labels.Select(l => $"{Trunc(l),12}")) + "   (probability / cosine)");
        foreach (var l in scores.Layers)
            Console.WriteLine($"{l.Layer,5}  " + string.Join("  ", labels.Select((_, i) => $"{l.Prob[i].ToString("0.000", CultureInfo.InvariantCulture),5} / {l.Cosine[i].ToString("0.000", CultureInfo.InvariantCulture),6}")));
        if (emergence is not null)
            foreach (var (c, e) in emergence)
                Console.WriteLine($"{c}: {(e is { } v ? $"emerges at layer {v}" : "never emerges")} (prob >= {threshold!.Value.ToString(CultureInfo.InvariantCulture)}, stays)");
        Console.WriteLine($"wrote {jsonPath} and {svgPath}");
        return 0;
    }

    private static string Trunc(string s) => s.Length <= 12 ? s : s[..11] + "…";
}
