using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusionLens.Sweep;

/// <summary>
/// The schema of a sweep's <c>manifest.json</c>: what was rendered, from which model and settings, and how long it took.
/// Property names are the JSON keys (snake_case).
/// </summary>
public sealed record SweepManifest
{
    public const string ToolName = "diffusion-lens-dotnet";
    public string Tool { get; init; } = ToolName;
    public string? Version { get; init; } = typeof(SweepManifest).Assembly.GetName().Version?.ToString();
    public required string CreatedUtc { get; init; }
    public required string Model { get; init; }
    public required string Pipeline { get; init; }
    /// <summary>"sd" or "if".</summary>
    public required string Kind { get; init; }
    public required string Prompt { get; init; }
    /// <summary>The prompt as the tokenizer saw it (IF: after caption cleaning).</summary>
    public required string ProcessedPrompt { get; init; }
    public required string NegativePrompt { get; init; }
    /// <summary>IF: whether diffusers' caption cleaning ran; SD: null.</summary>
    public bool? CleanCaption { get; init; }
    public required long Seed { get; init; }
    public required int Steps { get; init; }
    public required int UnetCallsPerImage { get; init; }
    public required double Guidance { get; init; }
    public required string Scheduler { get; init; }
    public required int Height { get; init; }
    public required int Width { get; init; }
    public required string Dtype { get; init; }
    public required string Device { get; init; }
    public required int Batch { get; init; }
    public required int NumLayers { get; init; }
    public required int[] Layers { get; init; }
    public string Lens { get; init; } = "final_layer_norm(output of encoder layer L) as the conditional embedding; unconditional = full-depth negative prompt";
    /// <summary>Layer index (as a string) to its PNG file name.</summary>
    public required SortedDictionary<string, string> Files { get; init; }
    public string Grid { get; init; } = "grid.png";
    public required SweepTimings TimingsS { get; init; }

    /// <summary>Orders layer keys numerically ("2" before "10").</summary>
    public static readonly IComparer<string> LayerOrder = Comparer<string>.Create((a, b) =>
        int.TryParse(a, out var x) && int.TryParse(b, out var y) ? x.CompareTo(y) : string.CompareOrdinal(a, b));

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json) + "\n";
    public static SweepManifest FromJson(string json) =>
        JsonSerializer.Deserialize<SweepManifest>(json, Json) ?? throw new LensException("manifest.json is empty");
}

/// <summary>Seconds spent in each phase of a sweep.</summary>
public sealed record SweepTimings
{
    public required double Load { get; init; }
    public required double Encode { get; init; }
    /// <summary>Layer index (as a string) to the seconds its batch took, divided by the batch's size.</summary>
    public required SortedDictionary<string, double> PerLayer { get; init; }
    /// <summary>Load included.</summary>
    public required double Total { get; init; }
}
