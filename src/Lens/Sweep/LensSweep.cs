using System.Diagnostics;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Sweep;

/// <summary>
/// The Diffusion Lens sweep: encode the prompt ONCE keeping every layer, pass each selected layer through the
/// encoder's final layer norm, and generate one image per layer with that as the conditional embedding (the
/// unconditional embedding stays the full-depth encoding of the negative prompt), all from the same seed.
/// Writes layer-XX.png, grid.png and manifest.json.
/// </summary>
public static class LensSweep
{
    /// <param name="log">progress lines (null: quiet)</param>
    /// <param name="warn">warnings, e.g. a truncated prompt (null: none)</param>
    public static SweepResult Run(SweepOptions o, Action<string>? log = null, Action<string>? warn = null)
    {
        var sw = Stopwatch.StartNew();
        if (o.Batch < 1) throw new LensException($"--batch must be at least 1 (got {o.Batch})");
        using var output = new OutputFolder(o.OutDir, o.Overwrite);
        log?.Invoke($"loading {o.ModelDir} ({o.DType} on {o.Device}) ...");
        using var pipe = LensPipeline.Load(o.ModelDir, o.Device, o.DType);
        pipe.Tokenizer.Warn = warn;
        log?.Invoke($"loaded in {sw.Elapsed.TotalSeconds:F1} s");
        double loadS = sw.Elapsed.TotalSeconds;
        var result = Run(pipe, o, output, log, loadS);
        output.Commit();
        return result;
    }

    /// <summary>Runs a sweep on an already loaded pipeline (used by audits that sweep one model many times).</summary>
    public static SweepResult Run(LensPipeline pipe, SweepOptions o, Action<string>? log = null)
    {
        using var output = new OutputFolder(o.OutDir, o.Overwrite);
        var result = Run(pipe, o, output, log, 0);
        output.Commit();
        return result;
    }

    private static SweepResult Run(LensPipeline pipe, SweepOptions o, OutputFolder output, Action<string>? log, double loadS)
    {
        var total = Stopwatch.StartNew();
        var d = pipe.Defaults;
        var gen = new GenerationOptions(o.Seed, o.Steps ?? d.Steps, o.Guidance ?? d.Guidance, o.Height ?? d.Height, o.Width ?? d.Width);
        if (gen.Steps < 1) throw new LensException($"--steps must be at least 1 (got {gen.Steps})");
        if (gen.Height < 8 || gen.Width < 8) throw new LensException($"image size {gen.Height}x{gen.Width} is too small");
        var layers = LayerSelection.Parse(o.Layers, pipe.NumLayers);

        var enc = Stopwatch.StartNew();
        using var prompt = pipe.EncodeLayers(o.Prompt, o.CleanCaption);
        using var negative = pipe.EncodeLayers(o.NegativePrompt, o.CleanCaption);
        using var uncond = pipe.Lens(negative.Hidden[^1]);
        double encodeS = enc.Elapsed.TotalSeconds;
        log?.Invoke($"encoded the prompt once: {pipe.NumLayers} layers; rendering {layers.Length} layer(s) at {gen.Width}x{gen.Height}, {gen.Steps} steps");

        var files = new SortedDictionary<int, string>();
        var images = new List<(string, RgbImage)>();
        var perLayer = new SortedDictionary<string, double>(SweepManifest.LayerOrder);
        int unetCalls = 0;
        for (int start = 0; start < layers.Length; start += o.Batch)
        {
            var chunk = layers.Skip(start).Take(o.Batch).ToArray();
            var t0 = Stopwatch.StartNew();
            var conds = chunk.Select(l => pipe.Lens(prompt.Hidden[l])).ToList();
            int lastReported = -1;
            Interrupt.ThrowIfRequested();
            using var unit = pipe.Generate(conds, uncond, gen, (step, of) =>
            {
                Interrupt.ThrowIfRequested(); // Ctrl-C: stop here; the output folder is removed on the way out
                unetCalls = of;
                int pct = step * 100 / of;
                if (pct / 10 != lastReported || step == of)
                {
                    lastReported = pct / 10;
                    log?.Invoke($"  layer {string.Join(",", chunk)} [{start + chunk.Length}/{layers.Length}] step {step}/{of}");
                }
            });
            foreach (var c in conds) c.Dispose();
            for (int j = 0; j < chunk.Length; j++)
            {
                var img = RgbImage.FromUnitHwc(unit[j]);
                var name = $"layer-{chunk[j]:D2}.png";
                img.SavePng(output.PathOf(name));
                files[chunk[j]] = name;
                images.Add(($"layer {chunk[j]}", img));
                perLayer[chunk[j].ToString()] = Math.Round(t0.Elapsed.TotalSeconds / chunk.Length, 4);
            }
        }
        Grid.Compose(images).SavePng(output.PathOf("grid.png"));

        var manifest = new SweepManifest
        {
            CreatedUtc = DateTime.UtcNow.ToString("o"),
            Model = Path.GetFullPath(o.ModelDir),
            Pipeline = pipe.PipelineName,
            Kind = pipe.Kind,
            Prompt = o.Prompt,
            ProcessedPrompt = prompt.Text,
            NegativePrompt = o.NegativePrompt,
            CleanCaption = pipe.Kind == "if" ? (o.CleanCaption ?? true) : null,
            Seed = o.Seed,
            Steps = gen.Steps,
            UnetCallsPerImage = unetCalls,
            Guidance = gen.Guidance,
            Scheduler = pipe.SchedulerName,
            Height = gen.Height,
            Width = gen.Width,
            Dtype = o.DType,
            Device = o.Device,
            Batch = o.Batch,
            NumLayers = pipe.NumLayers,
            Layers = layers,
            Files = new SortedDictionary<string, string>(files.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value), SweepManifest.LayerOrder),
            TimingsS = new SweepTimings
            {
                Load = Math.Round(loadS, 4),
                Encode = Math.Round(encodeS, 4),
                PerLayer = perLayer,
                Total = Math.Round(total.Elapsed.TotalSeconds + loadS, 4),
            },
        };
        File.WriteAllText(output.PathOf("manifest.json"), manifest.ToJson());
        return new SweepResult
        {
            OutDir = output.FinalPath,
            Layers = layers,
            LayerImages = files.ToDictionary(kv => kv.Key, kv => Path.Combine(output.FinalPath, kv.Value)),
            GridPath = Path.Combine(output.FinalPath, "grid.png"),
            ManifestPath = Path.Combine(output.FinalPath, "manifest.json"),
        };
    }
}
