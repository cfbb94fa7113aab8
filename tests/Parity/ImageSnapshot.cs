using DiffusionLens.Reports;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Approved-image snapshots (tests/Parity/Snapshots/NAME.png). A received image matches when it has the same size and
/// no channel of any pixel differs by more than <c>maxLevels</c> 8-bit levels. On a mismatch the received image and a
/// diff image (|difference| x 16, red where over tolerance) are written next to the approved one as
/// NAME.received.png / NAME.diff.png. LENS_ACCEPT_SNAPSHOTS=1 writes the received image as the new approved one.
/// </summary>
public static class ImageSnapshot
{
    public static string Folder => Path.Combine(ReferenceData.RepoRoot, "tests", "Parity", "Snapshots");

    public static void Match(string name, RgbImage received, int maxLevels)
    {
        Directory.CreateDirectory(Folder);
        var approved = Path.Combine(Folder, name + ".png");
        var receivedPath = Path.Combine(Folder, name + ".received.png");
        var diffPath = Path.Combine(Folder, name + ".diff.png");
        if (Environment.GetEnvironmentVariable("LENS_ACCEPT_SNAPSHOTS") == "1")
        {
            received.SavePng(approved);
            File.Delete(receivedPath);
            File.Delete(diffPath);
            return;
        }
        if (!File.Exists(approved))
        {
            received.SavePng(receivedPath);
            Assert.Fail($"no approved snapshot {approved}; the received image is at {receivedPath} (LENS_ACCEPT_SNAPSHOTS=1 accepts it)");
        }
        var expected = RgbImage.Load(approved);
        string? problem = null;
        if (expected.Width != received.Width || expected.Height != received.Height)
            problem = $"size {received.Width}x{received.Height} vs approved {expected.Width}x{expected.Height}";
        else
        {
            var diff = new RgbImage(received.Width, received.Height);
            int worst = 0, over = 0;
            for (int i = 0; i < received.Pixels.Length; i += 3)
            {
                int d = 0;
                for (int c = 0; c < 3; c++) d = Math.Max(d, Math.Abs(received.Pixels[i + c] - expected.Pixels[i + c]));
                worst = Math.Max(worst, d);
                bool bad = d > maxLevels;
                if (bad) over++;
                diff.Pixels[i] = (byte)(bad ? 255 : Math.Min(255, d * 16));
                diff.Pixels[i + 1] = (byte)(bad ? 0 : Math.Min(255, d * 16));
                diff.Pixels[i + 2] = (byte)(bad ? 0 : Math.Min(255, d * 16));
            }
            if (over > 0)
            {
                problem = $"{over} pixel(s) differ by more than {maxLevels} levels (worst {worst})";
                diff.SavePng(diffPath);
            }
        }
        if (problem is not null)
        {
            received.SavePng(receivedPath);
            Assert.Fail($"snapshot {name}: {problem}; received: {receivedPath}, diff: {diffPath}");
        }
        File.Delete(receivedPath);
        File.Delete(diffPath);
    }
}
