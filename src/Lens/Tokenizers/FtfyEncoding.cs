namespace DiffusionLens.Tokenizers;

internal static class FtfyEncoding
{
    public static string FixEncoding(string text) => text;
}
