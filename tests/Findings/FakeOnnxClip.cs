using System.Text;
using System.Text.Json;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// Writes a linear stand-in for an exported CLIP judge, so the ONNX Runtime plumbing of the judge (sessions, names,
/// shapes, dynamic batch, batching, scoring) is tested without the PyTorch-made fixture:
/// image_encoder.onnx = Flatten(pixel_values) x W, text_encoder.onnx = ReduceMean(Gather(E, input_ids), axis 1).
/// The ONNX protobuf is written by hand (field numbers of onnx.proto).
/// </summary>
internal static class FakeOnnxClip
{
    public const int Size = 8, Dim = 4, Vocab = 49408, Context = 77;

    public static float WeightW(int row, int col) => (float)Math.Sin(row * 0.37 + col * 1.3) * 0.05f;
    public static float WeightE(int id, int col) => (float)Math.Cos(id * 0.011 + col * 0.7);

    public static void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        int n = 3 * Size * Size;
        var w = new float[n * Dim];
        for (int r = 0; r < n; r++) for (int c = 0; c < Dim; c++) w[r * Dim + c] = WeightW(r, c);
        var e = new float[Vocab * Dim];
        for (int i = 0; i < Vocab; i++) for (int c = 0; c < Dim; c++) e[i * Dim + c] = WeightE(i, c);

        var image = Graph(
            Node("Flatten", new[] { "pixel_values" }, new[] { "flat" }, Attr("axis", 1)) +
            Node("MatMul", new[] { "flat", "W" }, new[] { "image_embeds" }),
            Tensor("W", new long[] { n, Dim }, w),
            Value("pixel_values", 1, "batch", 3, Size, Size),
            Value("image_embeds", 1, "batch", Dim));
        var text = Graph(
            Node("Gather", new[] { "E", "input_ids" }, new[] { "tok" }, Attr("axis", 0)) +
            Node("ReduceMean", new[] { "tok" }, new[] { "text_embeds" }, Attrs("axes", 1) + Attr("keepdims", 0)),
            Tensor("E", new long[] { Vocab, Dim }, e),
            Value("input_ids", 7, "batch", Context),
            Value("text_embeds", 1, "batch", Dim));
        File.WriteAllBytes(Path.Combine(dir, "image_encoder.onnx"), Model(image));
        File.WriteAllBytes(Path.Combine(dir, "text_encoder.onnx"), Model(text));
        var judge = new Dictionary<string, object>
        {
            ["format"] = "lens-clip-judge/1",
            ["source"] = "linear stand-in (tests/Findings/FakeOnnxClip.cs)",
            ["image_encoder"] = "image_encoder.onnx",
            ["text_encoder"] = "text_encoder.onnx",
            ["image_size"] = Size,
            ["resize"] = "shortest_side",
            ["interpolation"] = "bicubic",
            ["crop"] = "center",
            ["mean"] = new[] { 0.48145466, 0.4578275, 0.40821073 },
            ["std"] = new[] { 0.26862954, 0.26130258, 0.27577711 },
            ["logit_scale"] = 20.0,
            ["context_length"] = Context,
            ["pad_token_id"] = 49407,
        };
        File.WriteAllText(Path.Combine(dir, "judge.json"), JsonSerializer.Serialize(judge));
    }

    // --- protobuf writing ---------------------------------------------------------------------------------------
    private static byte[] Varint(ulong v)
    {
        var b = new List<byte>();
        do { byte x = (byte)(v & 0x7F); v >>= 7; if (v != 0) x |= 0x80; b.Add(x); } while (v != 0);
        return b.ToArray();
    }

    private static byte[] Key(int field, int wire) => Varint((ulong)((field << 3) | wire));
    private static byte[] IntField(int field, long v) => Key(field, 0).Concat(Varint((ulong)v)).ToArray();
    private static byte[] Bytes(int field, byte[] data) => Key(field, 2).Concat(Varint((ulong)data.Length)).Concat(data).ToArray();
    private static byte[] Str(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));

    // strings of bytes are carried as latin1 strings below so they can be concatenated with '+'
    private static string L(byte[] b) => Encoding.Latin1.GetString(b);
    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);

    private static string Attr(string name, long v) => L(Bytes(5, Str(1, name).Concat(IntField(20, 2)).Concat(IntField(3, v)).ToArray()));
    private static string Attrs(string name, params long[] v) =>
        L(Bytes(5, Str(1, name).Concat(IntField(20, 7)).Concat(v.SelectMany(x => IntField(8, x))).ToArray()));

    private static string Node(string op, string[] inputs, string[] outputs, string attrs = "") =>
        L(Bytes(1, inputs.SelectMany(i => Str(1, i)).Concat(outputs.SelectMany(o => Str(2, o))).Concat(Str(4, op)).Concat(B(attrs)).ToArray()));

    private static string Tensor(string name, long[] dims, float[] data)
    {
        var raw = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
        return L(Bytes(5, dims.SelectMany(d => IntField(1, d)).Concat(IntField(2, 1)).Concat(Str(8, name)).Concat(Bytes(9, raw)).ToArray()));
    }

    private static string Value(string name, int elemType, string batch, params int[] dims)
    {
        var shape = Bytes(1, Str(2, batch)).Concat(dims.SelectMany(d => Bytes(1, IntField(1, d)))).ToArray();
        var tensorType = IntField(1, elemType).Concat(Bytes(2, shape)).ToArray();
        var type = Bytes(1, tensorType);
        return L(Str(1, name).Concat(Bytes(2, type)).ToArray());
    }

    private static byte[] Graph(string nodes, string initializer, string input, string output) =>
        B(nodes).Concat(Str(2, "g")).Concat(B(initializer)).Concat(Bytes(11, B(input))).Concat(Bytes(12, B(output))).ToArray();

    private static byte[] Model(byte[] graph) =>
        IntField(1, 8).Concat(Str(2, "lens-tests")).Concat(Bytes(7, graph)).Concat(Bytes(8, Str(1, "").Concat(IntField(2, 17)).ToArray())).ToArray();
}
