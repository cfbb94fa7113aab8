namespace DiffusionLens.Cli;

/// <summary>
/// Progress output of long commands on stderr. On a terminal, step lines (<see cref="Step"/>) rewrite one updating
/// line (carriage return + erase to end of line) and other lines (<see cref="Line"/>) are printed above it; when stderr
/// is redirected every line is printed as a plain line. <see cref="Quiet"/> prints nothing.
/// </summary>
internal sealed class ProgressLog : IDisposable
{
    private readonly TextWriter _err;
    private readonly bool _terminal, _quiet;
    private bool _open; // an updating line is on the screen, not yet ended

    public ProgressLog(bool quiet, TextWriter? err = null, bool? terminal = null)
    {
        _quiet = quiet;
        _err = err ?? Console.Error;
        _terminal = terminal ?? !Console.IsErrorRedirected;
    }

    public bool Quiet => _quiet;

    /// <summary>A message that stays (on a terminal it replaces the updating line, which continues below it).</summary>
    public void Line(string message)
    {
        if (_quiet) return;
        if (_open) { _err.Write("\r\x1b[K"); _open = false; }
        _err.WriteLine(message);
    }

    /// <summary>A progress message: the updating line on a terminal, a plain line otherwise.</summary>
    public void Step(string message)
    {
        if (_quiet) return;
        if (!_terminal) { _err.WriteLine(message); return; }
        _err.Write("\r\x1b[K" + message.TrimStart());
        _err.Flush();
        _open = true;
    }

    /// <summary>Ends the updating line (its last state stays on the screen), so what follows starts on a new line.</summary>
    public void End()
    {
        if (_open) { _err.WriteLine(); _open = false; }
    }

    public void Dispose() => End();
}
