using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace DiffusionLens.Tokenizers;

/// <summary>
/// The normalization table that SentencePiece compiles into a model (<c>normalizer_spec.precompiled_charsmap</c>,
/// here nmt_nfkc: NFKC plus removal of control characters and mapping of odd spaces to ' '), applied the way
/// <c>tokenizers</c>' <c>normalizers.Precompiled</c> applies it (transformers 5's T5Tokenizer normalizer):
/// per extended grapheme cluster, the whole cluster (when under 6 UTF-8 bytes) is looked up first, else each of its
/// characters; a lookup takes the first (shortest) prefix match of the double-array trie.
/// </summary>
internal sealed class PrecompiledCharsmap
{
    private readonly uint[] _units;
    private readonly byte[] _normalized;

    public PrecompiledCharsmap(ReadOnlySpan<byte> blob)
    {
        if (blob.Length < 4) throw new LensException("malformed SentencePiece charsmap: too short");
        uint trieSize = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieSize % 4 != 0 || 4 + (long)trieSize > blob.Length)
            throw new LensException("malformed SentencePiece charsmap: bad trie size");
        _units = new uint[trieSize / 4];
        for (int i = 0; i < _units.Length; i++) _units[i] = BinaryPrimitives.ReadUInt32LittleEndian(blob.Slice(4 + 4 * i));
        _normalized = blob.Slice(4 + (int)trieSize).ToArray();
    }

    public string Normalize(string text)
    {
        if (text.Length == 0) return text;
        var sb = new StringBuilder(text.Length);
        var e = StringInfo.GetTextElementEnumerator(text);
        Span<byte> buf = stackalloc byte[64];
        while (e.MoveNext())
        {
            string g = (string)e.Current;
            int n = Encoding.UTF8.GetByteCount(g);
            if (n < 6)
            {
                Encoding.UTF8.GetBytes(g, buf);
                if (Transform(buf[..n], sb)) continue;
            }
            foreach (var rune in g.EnumerateRunes())
            {
                int len = rune.EncodeToUtf8(buf);
                if (!Transform(buf[..len], sb)) sb.Append(rune.ToString());
            }
        }
        return sb.ToString();
    }

    /// <summary>Appends the replacement of the first prefix of <paramref name="key"/> found in the trie.</summary>
    private bool Transform(ReadOnlySpan<byte> key, StringBuilder sb)
    {
        int value = FirstPrefixValue(key);
        if (value < 0) return false;
        int end = value;
        while (end < _normalized.Length && _normalized[end] != 0) end++;
        sb.Append(Encoding.UTF8.GetString(_normalized, value, end - value));
        return true;
    }

    // darts-clone double array: unit layout as in darts.h (has_leaf bit 8, value 31 bits, label, offset).
    private static bool HasLeaf(uint u) => ((u >> 8) & 1) == 1;
    private static int Value(uint u) => (int)(u & ((1u << 31) - 1));
    private static uint Label(uint u) => u & ((1u << 31) | 0xFF);
    private static uint Offset(uint u) => (u >> 10) << (int)((u & (1u << 9)) >> 6);

    private int FirstPrefixValue(ReadOnlySpan<byte> key)
    {
        if (_units.Length == 0) return -1;
        uint nodePos = 0;
        uint unit = _units[nodePos];
        nodePos ^= Offset(unit);
        foreach (byte b in key)
        {
            nodePos ^= b;
            if (nodePos >= _units.Length) return -1;
            unit = _units[nodePos];
            if (Label(unit) != b) return -1;
            nodePos ^= Offset(unit);
            if (HasLeaf(unit))
            {
                if (nodePos >= _units.Length) return -1;
                return Value(_units[nodePos]);
            }
        }
        return -1;
    }
}
