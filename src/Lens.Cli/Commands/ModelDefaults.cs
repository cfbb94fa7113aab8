namespace DiffusionLens.Cli.Commands;

/// <summary>The embedded tiny model: the CLI's default --model.</summary>
public static class ModelDefaults
{
    /// <summary>
    /// Shipped next to the CLI binary (copied from fixtures/models/sd-tiny-12 at build time); a build without that
    /// copy finds it in the repository checkout above the binary.
    /// </summary>
    public static string EmbeddedModel
    {
        get
        {
            var beside = Path.Combine(AppContext.BaseDirectory, "models", "sd-tiny-12");
            if (Directory.Exists(beside)) return beside;
            var starts = new[] { Environment.GetEnvironmentVariable("LENS_REPO_ROOT"), AppContext.BaseDirectory, Directory.GetCurrentDirectory() };
            foreach (var start in starts.Where(s => !string.IsNullOrEmpty(s)).Select(s => s!))
                for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                {
                    var inRepo = Path.Combine(d.FullName, "fixtures", "models", "sd-tiny-12");
                    if (Directory.Exists(inRepo)) return inRepo;
                }
            return beside;
        }
    }

    /// <summary>The --model folder, or the embedded tiny model with a note on stderr (its weights are random).</summary>
    public static string Resolve(string? model, TextWriter? note = null)
    {
        if (model is not null) return model;
        var embedded = EmbeddedModel;
        (note ?? Console.Error).WriteLine($"note: no --model given: using the embedded tiny model {embedded}; its weights are random, so its images show no content (pass --model DIR for a real diffusers model)");
        return embedded;
    }
}
