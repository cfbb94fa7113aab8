using System.Text.Json;
using DiffusionLens.Loading;
using DiffusionLens.TextEncoders;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Behavioural checks of the CLIP and T5 text encoders with tiny inline configs and random weights (no fixtures):
/// module keys as transformers names them, every layer returned, the final norm, causal / padding masks, loading
/// variants, and an independent eager re-computation of the first layer.
/// </summary>
public class TextEncoderShapeTests
{
    private const string ClipJson = """
        {"architectures": ["CLIPTextModel"], "vocab_size": 50, "hidden_size": 32, "intermediate_size": 40,
         "num_hidden_layers": 3, "num_attention_heads": 4, "max_position_embeddings": 16,
         "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
        """;

    private const string T5Json = """
        {"architectures": ["T5EncoderModel"], "vocab_size": 40, "d_model": 16, "d_kv": 4, "d_ff": 24,
         "num_layers": 3, "num_heads": 4, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
         "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
        """;

    private static void Randomize(nn.Module module, long seed)
    {
        using var _ = torch.no_grad();
        torch.manual_seed(seed);
        foreach (var (name, p) in module.named_parameters())
        {
            bool isNorm = name.Contains("layer_norm") || name.EndsWith("final_layer_norm.weight");
            if (isNorm && name.EndsWith(".weight")) p.normal_(1.0, 0.2);
            else p.normal_(0.0, 0.3);
        }
    }

    private static ClipTextModel TinyClip(long seed = 1)
    {
        var m = new ClipTextModel(ClipTextConfig.FromConfig(DiffusersConfig.FromJson(ClipJson)));
        Randomize(m, seed);
        return m;
    }

    private static T5EncoderModel TinyT5(string json = T5Json, long seed = 2, string embeddingKey = "shared")
    {
        var m = new T5EncoderModel(T5Config.FromConfig(DiffusersConfig.FromJson(json)), embeddingKey: embeddingKey);
        Randomize(m, seed);
        return m;
    }

    private static Tensor Ids(params long[][] rows) =>
        torch.tensor(rows.SelectMany(r => r).ToArray(), new long[] { rows.Length, rows[0].Length }, dtype: ScalarType.Int64);

    private static bool Same(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();

    private static void AssertClose(Tensor expected, Tensor actual, double atol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= atol, $"{what}: max abs diff {diff} > {atol}");
    }

    // ---------------------------------------------------------------------------------------------- CLIP

    [Fact]
    public void Clip_module_keys_are_transformers_names()
    {
        using var m = TinyClip();
        var keys = m.state_dict().Keys.ToHashSet();
        var expected = new List<string> { "embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
            "final_layer_norm.weight", "final_layer_norm.bias" };
        for (int i = 0; i < 3; i++)
        {
            foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "out_proj" })
            foreach (var pn in new[] { "weight", "bias" })
                expected.Add($"encoder.layers.{i}.self_attn.{proj}.{pn}");
            foreach (var mod in new[] { "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2" })
            foreach (var pn in new[] { "weight", "bias" })
                expected.Add($"encoder.layers.{i}.{mod}.{pn}");
        }
        Assert.Equal(expected.OrderBy(k => k, StringComparer.Ordinal), keys.OrderBy(k => k, StringComparer.Ordinal));
        Assert.Equal(new long[] { 50, 32 }, m.state_dict()["embeddings.token_embedding.weight"].shape);
        Assert.Equal(new long[] { 16, 32 }, m.state_dict()["embeddings.position_embedding.weight"].shape);
        Assert.Equal(new long[] { 40, 32 }, m.state_dict()["encoder.layers.0.mlp.fc1.weight"].shape);
    }

    [Fact]
    public void Clip_returns_every_layer_and_applies_final_norm()
    {
        using var m = TinyClip();
        using var ids = Ids(new long[] { 1, 5, 7, 9, 2, 3, 49, 0 }, new long[] { 4, 4, 8, 9, 1, 0, 49, 49 });
        using var output = m.Encode(ids);
        Assert.Equal(3, m.NumLayers);
        Assert.Equal(3, output.Hidden.Count);
        foreach (var h in output.Hidden) Assert.Equal(new long[] { 2, 8, 32 }, h.shape);
        using var normed = m.FinalLayerNorm(output.Hidden[^1]);
        Assert.True(Same(normed, output.LastHiddenState));
        // layers differ from each other and from the normed output
        Assert.False(torch.allclose(output.Hidden[0], output.Hidden[1]));
        Assert.False(torch.allclose(output.Hidden[^1], output.LastHiddenState));
        // LayerNorm: with weight 1/bias 0 each row would have mean 0; check the normalisation via a fresh norm
        using var fwd = m.forward(ids);
        Assert.True(Same(fwd, output.LastHiddenState));
    }

    [Fact]
    public void Clip_attention_is_causal()
    {
        using var m = TinyClip();
        using var a = Ids(new long[] { 3, 8, 1, 44, 6, 7, 20, 21, 22, 23 });
        using var b = Ids(new long[] { 3, 8, 1, 44, 6, 9, 30, 31, 2, 0 });
        using var oa = m.Encode(a);
        using var ob = m.Encode(b);
        for (int l = 0; l < 3; l++)
        {
            AssertClose(oa.Hidden[l].narrow(1, 0, 5), ob.Hidden[l].narrow(1, 0, 5), 1e-6, $"layer {l} prefix");
            Assert.False(torch.allclose(oa.Hidden[l].narrow(1, 5, 5), ob.Hidden[l].narrow(1, 5, 5)), $"layer {l} suffix should change");
        }
    }

    [Fact]
    public void Clip_padding_mask_semantics()
    {
        using var m = TinyClip();
        using var ids = Ids(new long[] { 3, 8, 1, 44, 6, 7 }, new long[] { 3, 8, 1, 0, 0, 0 });
        using var none = m.Encode(ids);
        // an all-ones mask is dropped (pure causal), as transformers' sdpa mask builder does
        using var ones = torch.ones(new long[] { 2, 6 }, dtype: ScalarType.Int64);
        using var withOnes = m.Encode(ids, ones);
        for (int l = 0; l < 3; l++) Assert.True(Same(none.Hidden[l], withOnes.Hidden[l]));
        // right padding: positions before the padding are unchanged (causal attention never sees later tokens)
        using var mask = torch.tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 }, new long[] { 2, 6 });
        using var padded = m.Encode(ids, mask);
        AssertClose(none.Hidden[^1][0], padded.Hidden[^1][0], 1e-6, "unpadded row");
        AssertClose(none.Hidden[^1].narrow(1, 0, 3), padded.Hidden[^1].narrow(1, 0, 3), 1e-6, "unpadded prefix");
        // padded positions do not see themselves/each other: they differ from the unmasked run
        Assert.False(torch.allclose(none.Hidden[^1][1].narrow(0, 4, 2), padded.Hidden[^1][1].narrow(0, 4, 2)));
    }

    [Fact]
    public void Clip_first_layer_matches_an_eager_recomputation()
    {
        using var m = TinyClip(seed: 5);
        var sd = m.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 44, 6, 7, 2 });
        using var output = m.Encode(ids);
        using var scope = NewDisposeScope();
        Tensor W(string k) => sd[k];
        Tensor Lin(Tensor x, string p) => torch.matmul(x, W(p + ".weight").t()) + W(p + ".bias");
        Tensor Ln(Tensor x, string p) => nn.functional.layer_norm(x, new long[] { 32 }, W(p + ".weight"), W(p + ".bias"), 1e-5);

        var pos = torch.arange(7, dtype: ScalarType.Int64);
        var x = W("embeddings.token_embedding.weight").index_select(0, ids[0]) + W("embeddings.position_embedding.weight").index_select(0, pos);
        x = x.unsqueeze(0);
        var h = Ln(x, "encoder.layers.0.layer_norm1");
        Tensor Heads(Tensor t) => t.view(1, 7, 4, 8).permute(0, 2, 1, 3);
        var q = Heads(Lin(h, "encoder.layers.0.self_attn.q_proj"));
        var k = Heads(Lin(h, "encoder.layers.0.self_attn.k_proj"));
        var v = Heads(Lin(h, "encoder.layers.0.self_attn.v_proj"));
        var scores = torch.matmul(q, k.transpose(-1, -2)) * Math.Pow(8, -0.5);
        var causal = torch.ones(7, 7, dtype: ScalarType.Bool).triu(1);
        scores = scores.masked_fill(causal, double.NegativeInfinity);
        var attn = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(1, 7, 32);
        x = x + Lin(attn, "encoder.layers.0.self_attn.out_proj");
        var f = Lin(Ln(x, "encoder.layers.0.layer_norm2"), "encoder.layers.0.mlp.fc1");
        f = f * torch.sigmoid(f * 1.702);
        x = x + Lin(f, "encoder.layers.0.mlp.fc2");
        AssertClose(x, output.Hidden[0], 1e-5, "layer 0");
    }

    private static string WriteFolder(string json, IEnumerable<KeyValuePair<string, Tensor>> tensors, string? fileName = null)
    {
        var dir = Path.Combine(Path.GetTempPath(), "lens-te-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), json);
        SafetensorsFile.Write(Path.Combine(dir, fileName ?? "model.safetensors"), tensors);
        return dir;
    }

    [Fact]
    public void Clip_loads_with_and_without_text_model_prefix()
    {
        using var src = TinyClip(seed: 9);
        var sd = src.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 44, 6, 7, 2 });
        using var expected = src.Encode(ids);

        // transformers 4: "text_model." prefix plus the legacy position_ids buffer
        using var posIds = torch.arange(16, dtype: ScalarType.Int64).unsqueeze(0);
        var withPrefix = sd.Select(kv => KeyValuePair.Create("text_model." + kv.Key, kv.Value))
            .Append(KeyValuePair.Create("text_model.embeddings.position_ids", posIds));
        var dir4 = WriteFolder(ClipJson, withPrefix);
        // transformers 5: no prefix, stored as float16 (loaded into float32)
        var dir5 = WriteFolder(ClipJson, sd.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.to(ScalarType.Float16))));
        try
        {
            using var m4 = ClipTextModel.FromFolder(dir4);
            using var o4 = m4.Encode(ids);
            for (int l = 0; l < 3; l++) Assert.True(Same(expected.Hidden[l], o4.Hidden[l]));

            using var m5 = ClipTextModel.FromFolder(dir5);
            Assert.Equal(ScalarType.Float32, m5.state_dict()["final_layer_norm.weight"].dtype);
            using var o5 = m5.Encode(ids);
            AssertClose(expected.LastHiddenState, o5.LastHiddenState, 0.05, "fp16-stored weights");
        }
        finally
        {
            Directory.Delete(dir4, true);
            Directory.Delete(dir5, true);
        }
    }

    [Fact]
    public void Clip_strict_load_rejects_other_unexpected_keys()
    {
        using var src = TinyClip();
        using var extra = torch.zeros(32, 32);
        var tensors = src.state_dict().Select(kv => KeyValuePair.Create(kv.Key, kv.Value))
            .Append(KeyValuePair.Create("text_projection.weight", extra));
        var dir = WriteFolder(ClipJson, tensors);
        try
        {
            var e = Assert.Throws<LensException>(() => ClipTextModel.FromFolder(dir));
            Assert.Contains("text_projection.weight", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Clip_rejects_unknown_activation()
    {
        var json = ClipJson.Replace("quick_gelu", "swishy");
        var e = Assert.Throws<LensException>(() => ClipTextConfig.FromConfig(DiffusersConfig.FromJson(json)));
        Assert.Contains("swishy", e.Message);
    }

    // ---------------------------------------------------------------------------------------------- T5

    [Fact]
    public void T5_module_keys_are_transformers_names()
    {
        using var m = TinyT5();
        var keys = m.state_dict().Keys.ToHashSet();
        var expected = new List<string> { "shared.weight", "encoder.final_layer_norm.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" };
        for (int i = 0; i < 3; i++)
        {
            foreach (var p in new[] { "q", "k", "v", "o" }) expected.Add($"encoder.block.{i}.layer.0.SelfAttention.{p}.weight");
            expected.Add($"encoder.block.{i}.layer.0.layer_norm.weight");
            foreach (var p in new[] { "wi_0", "wi_1", "wo" }) expected.Add($"encoder.block.{i}.layer.1.DenseReluDense.{p}.weight");
            expected.Add($"encoder.block.{i}.layer.1.layer_norm.weight");
        }
        Assert.Equal(expected.OrderBy(k => k, StringComparer.Ordinal), keys.OrderBy(k => k, StringComparer.Ordinal));
        Assert.Equal(new long[] { 8, 4 }, m.state_dict()["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape);
        Assert.Equal(new long[] { 24, 16 }, m.state_dict()["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"].shape);

        // non-gated (original T5, "relu"): a single "wi"
        using var relu = TinyT5(T5Json.Replace("gated-gelu", "relu"));
        var rk = relu.state_dict().Keys.ToHashSet();
        Assert.Contains("encoder.block.2.layer.1.DenseReluDense.wi.weight", rk);
        Assert.DoesNotContain("encoder.block.2.layer.1.DenseReluDense.wi_0.weight", rk);
    }

    [Fact]
    public void T5_relative_position_buckets_follow_the_t5_scheme()
    {
        // bidirectional, 32 buckets, max distance 128: 16 buckets per sign, 8 exact, then log-spaced up to 128
        long[] rel = { 0, -1, 1, -7, 7, 8, -8, -20, 20, -200, 200 };
        long[] expected = { 0, 1, 17, 7, 23, 24, 8, 10, 26, 15, 31 };
        using var t = torch.tensor(rel);
        using var b = T5Attention.RelativePositionBucket(t, bidirectional: true, numBuckets: 32, maxDistance: 128);
        Assert.Equal(expected, b.data<long>().ToArray());
    }

    [Fact]
    public void T5_returns_every_block_and_applies_final_norm()
    {
        using var m = TinyT5();
        using var ids = Ids(new long[] { 1, 5, 7, 9, 2, 3, 39, 0 }, new long[] { 4, 4, 8, 9, 1, 0, 1, 1 });
        using var output = m.Encode(ids);
        Assert.Equal(3, m.NumLayers);
        Assert.Equal(3, output.Hidden.Count);
        foreach (var h in output.Hidden) Assert.Equal(new long[] { 2, 8, 16 }, h.shape);
        using var normed = m.FinalLayerNorm(output.Hidden[^1]);
        Assert.True(Same(normed, output.LastHiddenState));
        Assert.False(torch.allclose(output.Hidden[0], output.Hidden[1]));
        // the encoder is bidirectional: the first position depends on the last token
        using var ids2 = Ids(new long[] { 1, 5, 7, 9, 2, 3, 39, 5 }, new long[] { 4, 4, 8, 9, 1, 0, 1, 1 });
        using var output2 = m.Encode(ids2);
        Assert.False(torch.allclose(output.Hidden[0][0][0], output2.Hidden[0][0][0]));
    }

    [Fact]
    public void T5_padding_mask_hides_padded_tokens()
    {
        using var m = TinyT5();
        using var a = Ids(new long[] { 3, 8, 1, 14, 6, 0, 0 });
        using var b = Ids(new long[] { 3, 8, 1, 14, 6, 22, 9 });
        using var mask = torch.tensor(new long[] { 1, 1, 1, 1, 1, 0, 0 }, new long[] { 1, 7 });
        using var oa = m.Encode(a, mask);
        using var ob = m.Encode(b, mask);
        for (int l = 0; l < 3; l++)
            AssertClose(oa.Hidden[l].narrow(1, 0, 5), ob.Hidden[l].narrow(1, 0, 5), 1e-6, $"block {l} unpadded");
        // without the mask the padded tokens are attended to
        using var na = m.Encode(a);
        using var nb = m.Encode(b);
        Assert.False(torch.allclose(na.Hidden[0].narrow(1, 0, 5), nb.Hidden[0].narrow(1, 0, 5)));
        // an explicit all-ones mask equals no mask
        using var ones = torch.ones(new long[] { 1, 7 }, dtype: ScalarType.Int64);
        using var oo = m.Encode(a, ones);
        Assert.True(Same(na.LastHiddenState, oo.LastHiddenState));
    }

    [Fact]
    public void T5_first_block_matches_an_eager_recomputation()
    {
        using var m = TinyT5(seed: 11);
        var sd = m.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 14, 6, 2 });
        using var output = m.Encode(ids);
        using var scope = NewDisposeScope();
        Tensor W(string k) => sd[k];
        Tensor Lin(Tensor x, string p) => torch.matmul(x, W(p + ".weight").t());
        Tensor Rms(Tensor x, string p) => W(p + ".weight") * (x * torch.rsqrt(x.pow(2).mean(new long[] { -1 }, keepdim: true) + 1e-6));

        var x = W("shared.weight").index_select(0, ids[0]).unsqueeze(0);
        var h = Rms(x, "encoder.block.0.layer.0.layer_norm");
        Tensor Heads(Tensor t) => t.view(1, 6, 4, 4).permute(0, 2, 1, 3);
        var q = Heads(Lin(h, "encoder.block.0.layer.0.SelfAttention.q"));
        var k = Heads(Lin(h, "encoder.block.0.layer.0.SelfAttention.k"));
        var v = Heads(Lin(h, "encoder.block.0.layer.0.SelfAttention.v"));
        // relative bias by hand: 8 buckets bidirectional -> 4 per sign, 2 exact, log-spaced up to 16
        var table = W("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        var bias = torch.zeros(1, 4, 6, 6);
        for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
        {
            int rp = j - i, a = Math.Abs(rp);
            int bucket = (rp > 0 ? 4 : 0) + (a < 2 ? a : Math.Min(3, 2 + (int)(Math.Log(a / 2.0) / Math.Log(8.0) * 2)));
            bias[0, .., i, j] = table[bucket];
        }
        var scores = torch.matmul(q, k.transpose(-1, -2)) + bias; // no 1/sqrt(d) scaling in T5
        var attn = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(1, 6, 16);
        x = x + Lin(attn, "encoder.block.0.layer.0.SelfAttention.o");
        var f = Rms(x, "encoder.block.0.layer.1.layer_norm");
        var g = Lin(f, "encoder.block.0.layer.1.DenseReluDense.wi_0");
        g = 0.5 * g * (1.0 + torch.tanh(Math.Sqrt(2.0 / Math.PI) * (g + 0.044715 * g.pow(3))));
        x = x + Lin(g * Lin(f, "encoder.block.0.layer.1.DenseReluDense.wi_1"), "encoder.block.0.layer.1.DenseReluDense.wo");
        AssertClose(x, output.Hidden[0], 1e-5, "block 0");
    }

    [Theory]
    [InlineData("shared")]
    [InlineData("both")]
    [InlineData("embed_tokens")]
    public void T5_loads_each_tied_embedding_layout(string layout)
    {
        using var src = TinyT5(seed: 21);
        var sd = src.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 14, 6, 2 });
        using var expected = src.Encode(ids);
        var emb = sd["shared.weight"];
        var tensors = sd.Where(kv => kv.Key != "shared.weight").Select(kv => KeyValuePair.Create(kv.Key, kv.Value)).ToList();
        if (layout is "shared" or "both") tensors.Add(KeyValuePair.Create("shared.weight", emb));
        if (layout is "embed_tokens" or "both") tensors.Add(KeyValuePair.Create("encoder.embed_tokens.weight", emb));
        using var dec = torch.zeros(4, 4);
        tensors.Add(KeyValuePair.Create("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", dec));
        var dir = WriteFolder(T5Json, tensors);
        try
        {
            using var m = T5EncoderModel.FromFolder(dir);
            using var o = m.Encode(ids);
            for (int l = 0; l < 3; l++) Assert.True(Same(expected.Hidden[l], o.Hidden[l]), $"{layout}: block {l}");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void T5_untied_checkpoint_uses_encoder_embed_tokens()
    {
        // A model saved with tie_word_embeddings=false by a transformers whose T5Stack owns its embed_tokens stores two
        // different tables; the encoder reads encoder.embed_tokens (older, tied transformers load it last, same result).
        using var src = TinyT5(seed: 23);
        var sd = src.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 14, 6, 2 });
        using var expected = src.Encode(ids);
        using var otherShared = torch.randn(40, 16);
        var tensors = sd.Where(kv => kv.Key != "shared.weight").Select(kv => KeyValuePair.Create(kv.Key, kv.Value)).ToList();
        tensors.Add(KeyValuePair.Create("encoder.embed_tokens.weight", sd["shared.weight"]));
        tensors.Add(KeyValuePair.Create("shared.weight", otherShared));
        var dir = WriteFolder(T5Json, tensors);
        try
        {
            using var m = T5EncoderModel.FromFolder(dir);
            Assert.Contains("encoder.embed_tokens.weight", m.state_dict().Keys);
            Assert.DoesNotContain("shared.weight", m.state_dict().Keys);
            using var o = m.Encode(ids);
            Assert.True(Same(expected.LastHiddenState, o.LastHiddenState));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void T5_float16_keeps_wo_in_float32_like_transformers()
    {
        using var src = TinyT5(seed: 31);
        var sd = src.state_dict();
        using var ids = Ids(new long[] { 3, 8, 1, 14, 6, 2 });
        using var expected = src.Encode(ids);
        var dir = WriteFolder(T5Json, sd.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.to(ScalarType.Float16))));
        try
        {
            using var m = T5EncoderModel.FromFolder(dir, dtype: ScalarType.Float16);
            var msd = m.state_dict();
            Assert.Equal(ScalarType.Float32, msd["encoder.block.1.layer.1.DenseReluDense.wo.weight"].dtype);
            Assert.Equal(ScalarType.Float16, msd["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"].dtype);
            Assert.Equal(ScalarType.Float16, msd["shared.weight"].dtype);
            using var o = m.Encode(ids);
            // block 0's attention runs in float16; its FF output (wo) is float32, so the residual stream turns float32
            Assert.Equal(ScalarType.Float32, o.Hidden[0].dtype);
            Assert.Equal(ScalarType.Float16, o.LastHiddenState.dtype); // T5LayerNorm casts to its float16 weight
            AssertClose(expected.LastHiddenState, o.LastHiddenState, 0.05, "float16 vs float32");
        }
        finally { Directory.Delete(dir, true); }
    }
}
