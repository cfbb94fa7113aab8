namespace DiffusionLens.Judge;

/// <summary>
/// Text to CLIP token ids for the judge's text encoder. The ids must start with &lt;|startoftext|&gt; and end with
/// &lt;|endoftext|&gt; (as CLIP's tokenizer produces them); the judge pads or truncates them to the context length.
/// The CLIP BPE tokenizer is wired in by the caller (e.g. <c>new DelegateTokenizer(ClipTokenizer.FromFolder(dir).Encode)</c>).
/// </summary>
internal interface ITextTokenizer
{
    (long[] ids, long[] mask) Encode(string text);
}

/// <summary>An <see cref="ITextTokenizer"/> over any encode function.</summary>
internal sealed class DelegateTokenizer : ITextTokenizer
{
    private readonly Func<string, (long[], long[])> _encode;
    public DelegateTokenizer(Func<string, (long[], long[])> encode) => _encode = encode ?? throw new ArgumentNullException(nameof(encode));
    public (long[] ids, long[] mask) Encode(string text) => _encode(text);
}
