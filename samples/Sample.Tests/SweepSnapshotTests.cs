using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using Xunit;

namespace Sample.Tests;

/// <summary>
/// Image snapshots of a lens sweep through the library's public API: the tiny model's layers 0, 4 and 8 against the
/// committed approved images, within 2 8-bit levels per channel (on a mismatch the received and diff images are
/// written beside the approved ones).
/// </summary>
public class SweepSnapshotTests
{
    [Fact]
    public void SweepLayerImagesMatchTheApprovedSnapshots()
    {
        Assert.False(ImageSnapshot.Accept, "the sample records nothing: unset LENS_ACCEPT_SNAPSHOTS");
        var outDir = Path.Combine(Path.GetTempPath(), $"lens-sample-sweep-{Guid.NewGuid():N}");
        try
        {
            var result = LensSweep.Run(new SweepOptions
            {
                ModelDir = Fixtures.Model("sd-tiny-12"),
                Prompt = "A few people are in the ocean splashing around",
                Seed = 17,
                Steps = 50,
                Layers = "0:12:4",
                OutDir = outDir,
            });
            Assert.Equal([0, 4, 8], result.Layers);
            Assert.True(File.Exists(result.GridPath) && File.Exists(result.ManifestPath));
            foreach (var (layer, path) in result.LayerImages)
                ImageSnapshot.Match($"sd-tiny-12-layer-{layer:D2}", RgbImage.Load(path), maxLevels: 2, folder: Fixtures.Snapshots);
        }
        finally
        {
            if (Directory.Exists(outDir)) Directory.Delete(outDir, true);
        }
    }

    [Fact]
    public void ADifferentImageFailsWithADiffImage()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"lens-sample-snap-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            var approved = new RgbImage(4, 4);
            approved.SavePng(Path.Combine(folder, "probe.png"));
            var received = new RgbImage(4, 4);
            received[1, 2, 0] = 9;
            var e = Assert.ThrowsAny<Exception>(() => ImageSnapshot.Match("probe", received, maxLevels: 2, folder: folder));
            Assert.Contains("1 pixel(s) differ by more than 2 levels", e.Message);
            Assert.True(File.Exists(Path.Combine(folder, "probe.diff.png")));
            Assert.True(File.Exists(Path.Combine(folder, "probe.received.png")));
        }
        finally { Directory.Delete(folder, true); }
    }
}
