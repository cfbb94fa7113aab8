namespace DiffusionLens;

/// <summary>
/// A user-facing error: bad input (missing or malformed file, wrong key or shape, bad option, layer out of range).
/// The CLI prints its message alone and exits with a non-zero code.
/// </summary>
public class LensException : Exception
{
    public LensException(string message) : base(message) { }
    public LensException(string message, Exception inner) : base(message, inner) { }
}
