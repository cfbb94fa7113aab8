namespace DiffusionLens.Cli.Commands;

/// <summary>The embedded tiny model: the CLI's default --model.</summary>
internal static class ModelDefaults
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

    /// <summary>
    /// --model (a folder or a Hub id, see <see cref="DiffusionLens.Loading.Hub.ModelResolver"/>), else the embedded
    /// model with a note on stderr (its weights are random). Download notes go to stderr (one updating line on a
    /// terminal, plain lines when redirected) unless quiet.
    /// </summary>
    /// <param name="components">the components a Hub id's download fetches (null: a lens pipeline's)</param>
    public static string Resolve(string? model, string? revision = null, bool quiet = false, TextWriter? note = null, string? variant = null,
        IReadOnlyList<string>? components = null)
    {
        if (model is null)
        {
            if (revision is not null) throw new LensException("--revision applies to a Hub id given with --model");
            var embedded = EmbeddedModel;
            if (!quiet)
                (note ?? Console.Error).WriteLine($"note: no --model given: using the embedded tiny model {embedded}; its weights are random, so its images show no content (pass --model DIR for a real diffusers model)");
            return embedded;
        }
        bool tty = !Console.IsErrorRedirected;
        long lastShown = 0;
        return DiffusionLens.Loading.Hub.ModelResolver.Resolve(model, revision, variant,
            quiet ? null : m => Console.Error.WriteLine(m),
            quiet || !tty ? null : (file, done, total) =>
            {
                if (done - lastShown < (1 << 20) && done != total) return;
                lastShown = done;
                var pct = total > 0 ? $"{100.0 * done / total,5:F1}%" : "";
                Console.Error.Write($"\r  {file}: {done / 1048576.0:F1} MiB {pct}   ");
                if (done == total) { Console.Error.WriteLine(); lastShown = 0; }
            }, components: components);
    }
}
