using System.Globalization;
using DiffusionLens.Loading;

namespace DiffusionLens.Judge;

/// <summary>
/// <c>judge.json</c> of a CLIP judge folder, as written by <c>fixtures/export_clip_onnx.py</c>: the ONNX file names and
/// their input/output names, the preprocessing rule and constants, the logit scale and the text settings.
/// Only the rule the judge implements is accepted (shortest-side resize, PIL bicubic, center crop); anything else
/// is a <see cref="LensException"/> naming the key.
/// </summary>
internal sealed record JudgeConfig
{
    public required string Folder { get; init; }
    public string Source { get; init; } = "";
    public required string ImageEncoder { get; init; }
    public required string TextEncoder { get; init; }
    public string ImageInput { get; init; } = "pixel_values";
    public string ImageOutput { get; init; } = "image_embeds";
    public string TextInput { get; init; } = "input_ids";
    public string TextOutput { get; init; } = "text_embeds";
    public required int ImageSize { get; init; }
    public required float[] Mean { get; init; }
    public required float[] Std { get; init; }
    public required double LogitScale { get; init; }
    public int ContextLength { get; init; } = 77;
    public long BosTokenId { get; init; } = 49406;
    public long EosTokenId { get; init; } = 49407;
    public long PadTokenId { get; init; } = 49407;
    public int? EmbedDim { get; init; }

    /// <summary>The CLIP BPE tokenizer's folder (vocab.json + merges.txt): judge.json "tokenizer_folder", relative to the
    /// judge folder, else the judge folder itself.</summary>
    public string TokenizerFolder { get; init; } = "";
    public string ImageEncoderPath => System.IO.Path.Combine(Folder, ImageEncoder);
    public string TextEncoderPath => System.IO.Path.Combine(Folder, TextEncoder);

    public static JudgeConfig Load(string folder)
    {
        if (!Directory.Exists(folder))
            throw new LensException($"CLIP judge folder not found: {folder} (make one with fixtures/export_clip_onnx.py)");
        var path = System.IO.Path.Combine(folder, "judge.json");
        if (!File.Exists(path))
            throw new LensException($"{folder} is not a CLIP judge folder: judge.json is missing (make one with fixtures/export_clip_onnx.py)");
        var c = DiffusersConfig.Load(path);

        string Expect(string key, string dflt, string supported)
        {
            var v = c.Str(key, dflt);
            if (v != supported) throw new LensException($"{path}: {key} '{v}' is not supported (the judge implements '{supported}')");
            return v;
        }
        Expect("resize", "shortest_side", "shortest_side");
        Expect("interpolation", "bicubic", "bicubic");
        Expect("crop", "center", "center");
        var pooling = c.Str("pooling", "argmax_input_ids");
        if (pooling != "argmax_input_ids") throw new LensException($"{path}: pooling '{pooling}' is not supported");

        float[] Triple(string key)
        {
            var a = c.Convert3(key);
            if (a.Length != 3) throw new LensException($"{path}: '{key}' must have 3 entries (RGB), has {a.Length}");
            return a;
        }
        var cfg = new JudgeConfig
        {
            Folder = folder,
            TokenizerFolder = System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, c.Str("tokenizer_folder", "."))),
            Source = c.Str("source", ""),
            ImageEncoder = c.Str("image_encoder", "image_encoder.onnx"),
            TextEncoder = c.Str("text_encoder", "text_encoder.onnx"),
            ImageInput = c.Str("image_input", "pixel_values"),
            ImageOutput = c.Str("image_output", "image_embeds"),
            TextInput = c.Str("text_input", "input_ids"),
            TextOutput = c.Str("text_output", "text_embeds"),
            ImageSize = c.Int("image_size"),
            Mean = Triple("mean"),
            Std = Triple("std"),
            LogitScale = c.Double("logit_scale"),
            ContextLength = c.Int("context_length", 77),
            BosTokenId = c.Has("bos_token_id") ? c.Long("bos_token_id") : 49406,
            EosTokenId = c.Has("eos_token_id") ? c.Long("eos_token_id") : 49407,
            PadTokenId = c.Has("pad_token_id") ? c.Long("pad_token_id") : 49407,
            EmbedDim = c.IntOrNull("embed_dim"),
        };
        if (cfg.ImageSize <= 0) throw new LensException($"{path}: image_size must be positive, got {cfg.ImageSize}");
        if (cfg.ContextLength < 2) throw new LensException($"{path}: context_length must be at least 2, got {cfg.ContextLength}");
        if (!(cfg.LogitScale > 0) || !double.IsFinite(cfg.LogitScale))
            throw new LensException($"{path}: logit_scale must be a positive number, got {cfg.LogitScale.ToString(CultureInfo.InvariantCulture)}");
        if (cfg.Std.Any(s => !(s > 0))) throw new LensException($"{path}: std entries must be positive");
        foreach (var f in new[] { cfg.ImageEncoderPath, cfg.TextEncoderPath })
            if (!File.Exists(f)) throw new LensException($"CLIP judge file missing: {f}");
        return cfg;
    }
}

internal static class JudgeConfigJson
{
    public static float[] Convert3(this DiffusersConfig c, string key)
    {
        if (!c.IsArray(key)) throw new LensException($"{c.Path}: '{key}' must be a list of numbers");
        try
        {
            return c.Root[key]!.AsArray().Select(n => (float)n!.GetValue<double>()).ToArray();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new LensException($"{c.Path}: '{key}' must be a list of numbers");
        }
    }
}
