namespace DiffusionLens.Cli.Commands;

/// <summary>The embedded tiny model: the CLI's default --model.</summary>
public static class ModelDefaults
{
    /// <summary>Shipped next to the CLI binary (copied from fixtures/models/sd-tiny-12 at build time).</summary>
    public static string EmbeddedModel => Path.Combine(AppContext.BaseDirectory, "models", "sd-tiny-12");

    public static string Resolve(string? model) => model ?? EmbeddedModel;
}
