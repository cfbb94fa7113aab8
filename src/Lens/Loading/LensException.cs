namespace DiffusionLens;

/// <summary>
/// A user-facing error: bad input (missing or malformed file, wrong key or shape, bad option, layer out of range).
/// The CLI prints its message alone and exits with a non-zero code.
/// </summary>
public class LensException : Exception
{
    /// <summary>An error with its one-line message.</summary>
    public LensException(string message) : base(message) { }
    /// <summary>An error with its one-line message and the exception that caused it.</summary>
    public LensException(string message, Exception inner) : base(message, inner) { }
}
