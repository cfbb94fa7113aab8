using DiffusionLens.Testing;

namespace Sample.Tests;

/// <summary>Where the committed tiny fixtures are: this repository's fixtures/ (found through ReferenceData.RepoRoot,
/// the folder above the test binaries holding .git or DiffusionLens.sln).</summary>
internal static class Fixtures
{
    public static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    /// <summary>The approved images the sample compares with (committed by the repository's own snapshot tests; the
    /// sample records nothing).</summary>
    public static string Snapshots => Path.Combine(ReferenceData.RepoRoot, "tests", "Parity", "Snapshots");
}
