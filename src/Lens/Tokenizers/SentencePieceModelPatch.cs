namespace DiffusionLens.Tokenizers;

/// <summary>
/// Minimal protobuf reading/rewriting of a SentencePiece <c>ModelProto</c> (spiece.model), enough to read the
/// special ids and piece count and to replace <c>trainer_spec.bos_id</c>. Microsoft.ML.Tokenizers 2.0.1 indexes
/// its vocabulary with <c>bos_id</c> and so throws on T5's <c>bos_id = -1</c>; T5 never adds a BOS, so the model is
/// handed over with <c>bos_id</c> set to the EOS id (harmless: BOS is never requested, and the piece is a control
/// symbol that the segmenter never produces).
/// </summary>
internal static class SentencePieceModelPatch
{
    // ModelProto: 1 = pieces (repeated), 2 = trainer_spec, 3 = normalizer_spec.
    // TrainerSpec: 40 = unk_id, 41 = bos_id, 42 = eos_id, 43 = pad_id (proto2 defaults 0, 1, 2, -1).
    // NormalizerSpec: 2 = precompiled_charsmap.
    private const int PiecesField = 1, TrainerSpecField = 2, NormalizerSpecField = 3, PrecompiledCharsmapField = 2;
    private const int UnkIdField = 40, BosIdField = 41, EosIdField = 42, PadIdField = 43;

    internal sealed record Info(int PieceCount, int UnkId, int BosId, int EosId, int PadId)
    {
        /// <summary>normalizer_spec.precompiled_charsmap (empty when the model has none).</summary>
        public byte[] Charsmap { get; init; } = Array.Empty<byte>();
    }

    private readonly record struct Field(int Number, int WireType, int Start, int End, ulong Varint);

    public static Info Read(byte[] model)
    {
        int pieces = 0;
        Info? info = null;
        byte[] charsmap = Array.Empty<byte>();
        foreach (var f in Fields(model, 0, model.Length))
        {
            if (f.Number == PiecesField && f.WireType == 2) pieces++;
            else if (f.Number == TrainerSpecField && f.WireType == 2) info = ReadTrainer(model, f);
            else if (f.Number == NormalizerSpecField && f.WireType == 2)
                foreach (var g in Fields(model, f.Start, f.End))
                    if (g.Number == PrecompiledCharsmapField && g.WireType == 2) charsmap = model[g.Start..g.End];
        }
        info ??= new Info(0, 0, 1, 2, -1);
        return info with { PieceCount = pieces, Charsmap = charsmap };
    }

    private static Info ReadTrainer(byte[] model, Field trainer)
    {
        int unk = 0, bos = 1, eos = 2, pad = -1;
        foreach (var f in Fields(model, trainer.Start, trainer.End))
        {
            if (f.WireType != 0) continue;
            int v = (int)(long)f.Varint; // int32 fields: negative values are 10-byte varints of the sign-extended value
            switch (f.Number)
            {
                case UnkIdField: unk = v; break;
                case BosIdField: bos = v; break;
                case EosIdField: eos = v; break;
                case PadIdField: pad = v; break;
            }
        }
        return new Info(0, unk, bos, eos, pad);
    }

    /// <summary>The model bytes with <c>trainer_spec.bos_id</c> replaced by <paramref name="bosId"/>.</summary>
    public static byte[] WithBosId(byte[] model, int bosId)
    {
        using var outp = new MemoryStream(model.Length + 16);
        int copied = 0;
        foreach (var f in Fields(model, 0, model.Length))
        {
            if (f.Number != TrainerSpecField || f.WireType != 2) continue;
            // Rebuild the trainer spec without bos_id, then with the new one.
            using var inner = new MemoryStream();
            int innerCopied = f.Start;
            foreach (var g in Fields(model, f.Start, f.End))
            {
                if (g.Number != BosIdField) continue;
                int tagStart = TagStart(model, f.Start, g);
                inner.Write(model, innerCopied, tagStart - innerCopied);
                innerCopied = g.End;
            }
            inner.Write(model, innerCopied, f.End - innerCopied);
            WriteVarint(inner, (ulong)((BosIdField << 3) | 0));
            WriteVarint(inner, (ulong)(long)bosId);
            byte[] innerBytes = inner.ToArray();

            int fieldTagStart = TagStart(model, 0, f);
            outp.Write(model, copied, fieldTagStart - copied);
            WriteVarint(outp, (ulong)((TrainerSpecField << 3) | 2));
            WriteVarint(outp, (ulong)innerBytes.Length);
            outp.Write(innerBytes);
            copied = f.End;
        }
        outp.Write(model, copied, model.Length - copied);
        return outp.ToArray();
    }

    /// <summary>
    /// A unigram <c>ModelProto</c> from a piece list (what a tokenizer.json's Unigram model holds), for
    /// Microsoft.ML.Tokenizers' SentencePieceTokenizer: piece types 1 normal, 2 unknown, 3 control; the normalizer
    /// spec is "identity" (normalization is applied before the model, as tokenizers does) with SentencePiece's
    /// whitespace flags of T5's spiece.model.
    /// </summary>
    public static byte[] BuildUnigram(IReadOnlyList<(string Piece, float Score, int Type)> pieces, int unkId, int bosId, int eosId, int padId)
    {
        using var outp = new MemoryStream();
        foreach (var (piece, score, type) in pieces)
        {
            using var m = new MemoryStream();
            WriteBytes(m, 1, System.Text.Encoding.UTF8.GetBytes(piece));
            WriteVarint(m, (2 << 3) | 5);
            m.Write(BitConverter.GetBytes(score));
            WriteVarint(m, 3 << 3);
            WriteVarint(m, (ulong)type);
            WriteBytes(outp, PiecesField, m.ToArray());
        }
        using (var t = new MemoryStream())
        {
            foreach (var (field, v) in new[] { (3, 1), (UnkIdField, unkId), (BosIdField, bosId), (EosIdField, eosId), (PadIdField, padId) })
            {
                WriteVarint(t, (ulong)(field << 3));
                WriteVarint(t, (ulong)(long)v);
            }
            WriteBytes(outp, TrainerSpecField, t.ToArray());
        }
        using (var n = new MemoryStream())
        {
            WriteBytes(n, 1, "identity"u8.ToArray());
            foreach (var field in new[] { 3, 4, 5 })
            {
                WriteVarint(n, (ulong)(field << 3));
                WriteVarint(n, 1);
            }
            WriteBytes(outp, NormalizerSpecField, n.ToArray());
        }
        return outp.ToArray();
    }

    private static void WriteBytes(Stream s, int field, byte[] payload)
    {
        WriteVarint(s, (ulong)((field << 3) | 2));
        WriteVarint(s, (ulong)payload.Length);
        s.Write(payload);
    }

    // Fields() records each field's payload range; the tag start is found again by re-walking from the parent start.
    private static int TagStart(byte[] buf, int parentStart, Field target)
    {
        int pos = parentStart;
        while (pos < target.Start)
        {
            int tagStart = pos;
            var f = ReadField(buf, ref pos);
            if (f.Start == target.Start && f.End == target.End && f.Number == target.Number) return tagStart;
        }
        throw new LensException("malformed SentencePiece model: field offsets are inconsistent");
    }

    private static IEnumerable<Field> Fields(byte[] buf, int start, int end)
    {
        int pos = start;
        while (pos < end)
        {
            var f = ReadField(buf, ref pos);
            if (pos > end) throw new LensException("malformed SentencePiece model: a field runs past its message");
            yield return f;
        }
    }

    private static Field ReadField(byte[] buf, ref int pos)
    {
        ulong tag = ReadVarint(buf, ref pos);
        int number = (int)(tag >> 3), wt = (int)(tag & 7);
        switch (wt)
        {
            case 0:
            {
                int s = pos;
                ulong v = ReadVarint(buf, ref pos);
                return new Field(number, wt, s, pos, v);
            }
            case 1: pos += 8; return new Field(number, wt, pos - 8, pos, 0);
            case 5: pos += 4; return new Field(number, wt, pos - 4, pos, 0);
            case 2:
            {
                ulong len = ReadVarint(buf, ref pos);
                if (len > (ulong)(buf.Length - pos)) throw new LensException("malformed SentencePiece model: truncated field");
                int s = pos;
                pos += (int)len;
                return new Field(number, wt, s, pos, 0);
            }
            default:
                throw new LensException($"malformed SentencePiece model: unsupported protobuf wire type {wt}");
        }
    }

    private static ulong ReadVarint(byte[] buf, ref int pos)
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= buf.Length) throw new LensException("malformed SentencePiece model: truncated varint");
            byte b = buf[pos++];
            result |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return result;
        }
        throw new LensException("malformed SentencePiece model: varint too long");
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }
}
