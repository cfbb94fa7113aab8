using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusionLens.Judge;

/// <summary>JSON settings of the findings files (snake_case keys, strict on unknown keys when reading).</summary>
internal static class FindingsJson
{
    public static readonly JsonSerializerOptions Options = Create();

    private static JsonSerializerOptions Create()
    {
        var o = new JsonSerializerOptions
        {
            PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
            WriteIndented = true,
            ReadCommentHandling = JsonCommentHandling.Skip,
            AllowTrailingCommas = true,
            UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
            DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        };
        o.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false));
        return o;
    }

    public static T Read<T>(string path, string what)
    {
        if (!File.Exists(path)) throw new LensException($"{what} not found: {path}");
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Options) ?? throw new LensException($"{path}: empty {what}");
        }
        catch (JsonException e)
        {
            throw new LensException($"{path}: malformed {what}: {e.Message}");
        }
    }

    public static void Write<T>(string path, T value)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, JsonSerializer.Serialize(value, Options) + "\n");
    }
}

internal sealed record JudgeInfo
{
    public string Folder { get; init; } = "";
    public string Source { get; init; } = "";
    public double LogitScale { get; init; }
    public int ImageSize { get; init; }
    public string Device { get; init; } = "cpu";
}

/// <summary>Scores of one sweep image: per label (concepts, then distractors) the cosine and the softmax probability.</summary>
internal sealed record LayerScore
{
    public int Layer { get; init; }
    public string Image { get; init; } = "";
    public double[] Cosine { get; init; } = Array.Empty<double>();
    public double[] Prob { get; init; } = Array.Empty<double>();
}

/// <summary><c>scores.json</c>: the judge's scores of a sweep, layer by layer.</summary>
internal sealed record JudgeScores
{
    public string Format { get; init; } = "lens-judge-scores/1";
    public JudgeInfo Judge { get; init; } = new();
    public string Template { get; init; } = ClipJudge.DefaultTemplate;
    public string[] Concepts { get; init; } = Array.Empty<string>();
    public string[] Distractors { get; init; } = Array.Empty<string>();
    /// <summary>The texts given to the text encoder, one per label (concepts, then distractors).</summary>
    public string[] Texts { get; init; } = Array.Empty<string>();
    public IReadOnlyList<LayerScore> Layers { get; init; } = Array.Empty<LayerScore>();

    [JsonIgnore] public IReadOnlyList<string> Labels => Concepts.Concat(Distractors).ToArray();
    [JsonIgnore] public int[] LayerNumbers => Layers.Select(l => l.Layer).ToArray();

    public int LabelIndex(string label)
    {
        int i = Array.IndexOf(Labels.ToArray(), label);
        if (i < 0) throw new LensException($"'{label}' is not one of the scored concepts ({string.Join(", ", Labels)})");
        return i;
    }

    /// <summary>The probability (or cosine) of one label across the layers.</summary>
    public double[] Curve(string label, bool cosine = false)
    {
        int i = LabelIndex(label);
        return Layers.Select(l => cosine ? l.Cosine[i] : l.Prob[i]).ToArray();
    }

    public void Save(string path) => FindingsJson.Write(path, this);
    public static JudgeScores Load(string path) => FindingsJson.Read<JudgeScores>(path, "scores file");

    /// <summary>Numerically stable softmax in double.</summary>
    public static double[] Softmax(double[] logits)
    {
        double max = logits.Max();
        var e = logits.Select(l => Math.Exp(l - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }
}
