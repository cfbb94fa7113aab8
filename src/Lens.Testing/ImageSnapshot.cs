using DiffusionLens.Reports;
using Xunit;

namespace DiffusionLens.Testing;

/// <summary>
/// Approved-image snapshots (<c>FOLDER/NAME.png</c>). A received image matches when it has the same size and no channel
/// of any pixel differs by more than <c>maxLevels</c> 8-bit levels. On a mismatch the received image and a diff image
/// (|difference| x 16, red where over tolerance) are written next to the approved one as NAME.received.png /
/// NAME.diff.png. With <see cref="Accept"/> (default: the environment variable LENS_ACCEPT_SNAPSHOTS=1) the received
/// image is written as the new approved one.
/// </summary>
public static class ImageSnapshot
{
    private static string? _folder;

    /// <summary>
    /// Where approved snapshots live when <see cref="Match"/> is given no folder: set it, else $LENS_SNAPSHOTS_DIR, else
    /// <see cref="ReferenceData.RepoRoot"/>/tests/Snapshots.
    /// </summary>
    public static string Folder
    {
        get => _folder ?? NonEmpty(Environment.GetEnvironmentVariable("LENS_SNAPSHOTS_DIR"))
               ?? Path.Combine(ReferenceData.RepoRoot, "tests", "Snapshots");
        set => _folder = value;
    }

    /// <summary>Accept switch: write received images as the approved ones instead of comparing (default: LENS_ACCEPT_SNAPSHOTS=1).</summary>
    public static bool Accept { get; set; } = Environment.GetEnvironmentVariable("LENS_ACCEPT_SNAPSHOTS") == "1";

    private static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>
    /// Asserts that <paramref name="received"/> matches the approved snapshot <paramref name="name"/>.png in
    /// <paramref name="folder"/> (default <see cref="Folder"/>) within <paramref name="maxLevels"/> 8-bit levels per channel;
    /// fails naming the received and diff images it wrote, or that no approved snapshot exists yet.
    /// </summary>
    public static void Match(string name, RgbImage received, int maxLevels, string? folder = null)
    {
        folder ??= Folder;
        Directory.CreateDirectory(folder);
        var approved = Path.Combine(folder, name + ".png");
        var receivedPath = Path.Combine(folder, name + ".received.png");
        var diffPath = Path.Combine(folder, name + ".diff.png");
        if (Accept)
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
        var problem = Compare(RgbImage.Load(approved), received, maxLevels, diffPath);
        if (problem is not null)
        {
            received.SavePng(receivedPath);
            Assert.Fail($"snapshot {name}: {problem}; received: {receivedPath}, diff: {diffPath}");
        }
        File.Delete(receivedPath);
        File.Delete(diffPath);
    }

    /// <summary>Null when the images match; else what differs (the diff image is written to <paramref name="diffPath"/>).</summary>
    private static string? Compare(RgbImage expected, RgbImage received, int maxLevels, string diffPath)
    {
        if (expected.Width != received.Width || expected.Height != received.Height)
            return $"size {received.Width}x{received.Height} vs approved {expected.Width}x{expected.Height}";
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
        if (over == 0) return null;
        diff.SavePng(diffPath);
        return $"{over} pixel(s) differ by more than {maxLevels} levels (worst {worst})";
    }
}
