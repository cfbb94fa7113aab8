using System.Collections.Concurrent;

namespace DiffusionLens;

/// <summary>
/// Ctrl-C for a long run: the first interrupt asks the running sweep to stop at its next step (it throws
/// <see cref="OperationCanceledException"/>, and the output folder being written is removed as on any failure); a
/// second one removes every partial output still registered and ends the process at once.
/// </summary>
internal static class Interrupt
{
    private static volatile bool _requested;
    private static readonly ConcurrentDictionary<string, byte> _partial = new();

    public static bool Requested => _requested;

    /// <summary>Asks the running work to stop; returns false when it had already been asked (the caller then exits).</summary>
    public static bool Request()
    {
        if (_requested) return false;
        _requested = true;
        return true;
    }

    /// <summary>Clears a request (tests; a process runs one command).</summary>
    public static void Reset() => _requested = false;

    public static void ThrowIfRequested()
    {
        if (_requested) throw new OperationCanceledException("interrupted");
    }

    /// <summary>A file or folder this tool is writing that must not outlive an interrupted run.</summary>
    public static void RegisterPartial(string path) => _partial[path] = 0;
    public static void Unregister(string path) => _partial.TryRemove(path, out _);

    /// <summary>Removes every registered partial output (best effort); returns what was removed.</summary>
    public static IReadOnlyList<string> RemovePartials()
    {
        var removed = new List<string>();
        foreach (var p in _partial.Keys)
        {
            try
            {
                if (Directory.Exists(p)) Directory.Delete(p, true);
                else if (File.Exists(p)) File.Delete(p);
                removed.Add(p);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            _partial.TryRemove(p, out _);
        }
        return removed;
    }
}
