using DiffusionLens.Sweep;
using DiffusionLens.Reports;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Image snapshots of the tiny-model sweeps (layer images and the labelled grid) made by the real CLI path.
/// Tolerance: 2 8-bit levels per channel (the layer images themselves are checked against diffusers in
/// PipelineParityTests; the snapshots pin the grid's layout and labels and catch any drift).
/// </summary>
[Collection("pipelines")]
public class SnapshotTests
{
    public static TheoryData<string, string, int, string> Sweeps() => new()
    {
        { "sd-tiny-12", "all", 50, "A few people are in the ocean splashing around" },
        { "if-tiny-a", "0:24:2", 20, "A few people are in the ocean splashing around" },
    };

    [Theory, MemberData(nameof(Sweeps))]
    public void SweepGridAndLayerImages(string model, string layers, int steps, string prompt)
    {
        var outDir = CliRunner.TempPath("snap");
        var result = LensSweep.Run(new SweepOptions
        {
            ModelDir = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", model),
            Variant = model == "if-tiny-a" ? "fp16" : null, // its text encoder exists only as fp16-variant files
            Prompt = prompt,
            Steps = steps,
            Layers = layers,
            OutDir = outDir,
            Seed = 17,
        });
        try
        {
            ImageSnapshot.Match($"{model}-grid", RgbImage.Load(result.GridPath), 2);
            foreach (var (layer, path) in result.LayerImages.Where(kv => kv.Key % 4 == 0))
                ImageSnapshot.Match($"{model}-layer-{layer:D2}", RgbImage.Load(path), 2);
        }
        finally
        {
            Directory.Delete(outDir, true);
        }
    }
}
