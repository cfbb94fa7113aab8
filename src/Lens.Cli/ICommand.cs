namespace DiffusionLens.Cli;

/// <summary>One CLI verb (<c>lens NAME ...</c>). Each lives in its own file under Commands/ and is listed in <see cref="Program.Commands"/>.</summary>
internal interface ICommand
{
    string Name { get; }
    string Summary { get; }
    /// <summary>Usage text printed by <c>lens NAME --help</c>.</summary>
    string Usage { get; }
    /// <returns>the process exit code</returns>
    int Run(IReadOnlyList<string> args);
}
