using System.Globalization;
using DiffusionLens;

namespace DiffusionLens.Cli;

/// <summary>Maps any exception to one message line naming the problem and an exit code (no stack traces).</summary>
internal static class Failure
{
    public static (int Code, string Message) Describe(Exception e, IReadOnlyList<string> args)
    {
        if (e is AggregateException { InnerExceptions.Count: 1 } agg) e = agg.InnerExceptions[0];
        if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner;
        return e switch
        {
            LensException => (ExitCodes.Usage, e.Message),
            OperationCanceledException => (ExitCodes.Interrupted, "interrupted; the partial output was removed"),
            _ when IsOutOfMemory(e) => (ExitCodes.RunFailed, OutOfMemory(e, args)),
            UnauthorizedAccessException => (ExitCodes.RunFailed, $"permission denied: {FirstLine(e.Message)}"),
            IOException io => (ExitCodes.RunFailed, DiskFull(io) ? $"the disk is full: {FirstLine(e.Message)}" : $"I/O error: {FirstLine(e.Message)}"),
            _ => (ExitCodes.RunFailed, $"internal error ({e.GetType().Name}): {FirstLine(e.Message)}; please report it with the command line"),
        };
    }

    public static bool IsOutOfMemory(Exception e) =>
        e is OutOfMemoryException
        || e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("can't allocate memory", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("CUDNN_STATUS_ALLOC_FAILED", StringComparison.Ordinal);

    private static bool DiskFull(IOException e) =>
        (e.HResult & 0xFFFF) is 28 or 112 || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    /// <summary>"out of memory ...: try --batch N" (half the batch given), or what else to try at --batch 1; and --batch-invariant off where it pads.</summary>
    public static string OutOfMemory(Exception e, IReadOnlyList<string> args)
    {
        int batch = 1;
        var v = OptionValue(args, "batch");
        if (v is not null && int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var b) && b > 0) batch = b;
        var device = OptionValue(args, "device") ?? "cpu";
        var what = FirstLine(e.Message);
        var hint = batch > 1
            ? $"try --batch {Math.Max(1, batch / 2)} (it was {batch})"
            : "--batch is already 1: try --dtype float16, a smaller --height/--width, or a device with more memory";
        // --batch-invariant (auto: on for CUDA) pads a smaller batch's batch-variant calls to 12 layers' rows
        var invariant = OptionValue(args, "batch-invariant") ?? "auto";
        if (invariant == "on" || (invariant == "auto" && device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase)))
            hint += "; or --batch-invariant off (its padded calls hold 12 layers' rows)";
        return $"out of memory on {device} ({what}); {hint}";
    }

    private static string? OptionValue(IReadOnlyList<string> args, string name)
    {
        for (int i = 0; i < args.Count; i++)
        {
            if (args[i] == "--" + name && i + 1 < args.Count) return args[i + 1];
            if (args[i].StartsWith($"--{name}=", StringComparison.Ordinal)) return args[i][(name.Length + 3)..];
        }
        return null;
    }

    /// <summary>The first non-empty line (libtorch appends its C++ stack to the message).</summary>
    public static string FirstLine(string message)
    {
        var line = message.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? "";
        return line.Length > 400 ? line[..400] + "…" : line;
    }
}
