namespace DiffusionLens.Cli;

/// <summary>The process exit codes of every <c>lens</c> command (the audit adds its verdict codes 1 and 3).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>lens audit: a claim was contradicted or inconclusive (see --fail-on), or its runs failed.</summary>
    public const int AuditFailed = 1;
    /// <summary>Bad usage or input: an option, a model folder, a file, a key or a shape; nothing was written.</summary>
    public const int Usage = 2;
    /// <summary>lens audit: nothing ran (every claim was skipped).</summary>
    public const int NothingRan = 3;
    /// <summary>The run failed: out of memory, an I/O error (e.g. a full disk), or an internal error.</summary>
    public const int RunFailed = 4;
    /// <summary>Interrupted (Ctrl-C); the partial output was removed.</summary>
    public const int Interrupted = 130;

    public const string Describe = "0 ok, 1 audit: a claim contradicted/inconclusive/failed, 2 bad usage or input, 3 audit: nothing ran, 4 the run failed (out of memory, I/O, internal error), 130 interrupted";
}
