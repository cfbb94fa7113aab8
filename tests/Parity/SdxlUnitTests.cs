using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Pipelines;
using DiffusionLens.Testing;
using DiffusionLens.TextEncoders;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Stable Diffusion XL pieces that need no recorded fixture. Expected key names come from diffusers' and transformers'
/// sources, not from this implementation: unet_2d_condition.py _set_add_embedding ("text_time": add_time_proj =
/// Timesteps (no parameters), add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim),
/// i.e. linear_1 [time_embed_dim, in] and linear_2 [time_embed_dim, time_embed_dim]); unet_2d_blocks.py (DownBlock2D:
/// resnets + downsamplers, no attentions; CrossAttnDownBlock2D: attentions.i.transformer_blocks.j for j &lt;
/// transformer_layers_per_block[i]; up blocks get the reversed list and layers_per_block + 1 resnets; the mid block the
/// last entry); transformer_2d.py (use_linear_projection: proj_in is a Linear [C, C]); modeling_clip.py
/// (CLIPTextModelWithProjection: text_model.* and a bias-free text_projection [projection_dim, hidden_size]; the pooled
/// position is argmax(ids) when eos_token_id == 2, else the first eos_token_id).
/// </summary>
public class SdxlUnitTests
{
    /// <summary>A tiny SDXL-shaped UNet config, written by hand (DownBlock2D first, per-block transformer layers).</summary>
    internal const string TinySdxlUnet = """
    {
      "_class_name": "UNet2DConditionModel",
      "sample_size": 12, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
      "block_out_channels": [16, 32],
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
      "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
      "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4], "num_attention_heads": null,
      "cross_attention_dim": 40, "norm_num_groups": 8, "use_linear_projection": true,
      "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 56,
      "flip_sin_to_cos": true, "freq_shift": 0
    }
    """;

    private static Dictionary<string, long[]> Keys(nn.Module m) => m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    [Fact]
    public void Unet_text_time_keys_and_shapes_follow_diffusers()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(TinySdxlUnet));
        var keys = Keys(unet);
        int ted = 16 * 4; // time_embed_dim = block_out_channels[0] * 4
        Assert.Equal(new long[] { ted, 56 }, keys["add_embedding.linear_1.weight"]);
        Assert.Equal(new long[] { ted }, keys["add_embedding.linear_1.bias"]);
        Assert.Equal(new long[] { ted, ted }, keys["add_embedding.linear_2.weight"]);
        Assert.DoesNotContain(keys.Keys, k => k.StartsWith("add_time_proj", StringComparison.Ordinal));
        Assert.Equal("text_time", unet.AdditionEmbedType);
        Assert.Equal(8, unet.AdditionTimeEmbedDim);
        Assert.Equal(56, unet.ProjectionClassEmbeddingsInputDim);

        // DownBlock2D first: resnets and a downsampler, no attention
        Assert.Contains("down_blocks.0.resnets.0.conv1.weight", keys.Keys);
        Assert.Contains("down_blocks.0.downsamplers.0.conv.weight", keys.Keys);
        Assert.DoesNotContain(keys.Keys, k => k.StartsWith("down_blocks.0.attentions", StringComparison.Ordinal));
        // CrossAttnDownBlock2D with 2 transformer layers, linear projections, cross-attention from 40-wide states
        Assert.Equal(new long[] { 32, 32 }, keys["down_blocks.1.attentions.0.proj_in.weight"]);
        Assert.Equal(new long[] { 32, 40 }, keys["down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"]);
        Assert.DoesNotContain("down_blocks.1.attentions.0.transformer_blocks.2.attn1.to_q.weight", keys.Keys);
        // the mid block takes the last entry (2 layers)
        Assert.Contains("mid_block.attentions.0.transformer_blocks.1.attn1.to_q.weight", keys.Keys);
        Assert.DoesNotContain("mid_block.attentions.0.transformer_blocks.2.attn1.to_q.weight", keys.Keys);
        // up blocks: reversed list, layers_per_block + 1 resnets; the UpBlock2D last has no attention
        Assert.Contains("up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v.weight", keys.Keys);
        Assert.DoesNotContain("up_blocks.0.attentions.2.proj_in.weight", keys.Keys);
        Assert.Contains("up_blocks.0.upsamplers.0.conv.weight", keys.Keys);
        Assert.Contains("up_blocks.1.resnets.1.conv1.weight", keys.Keys);
        Assert.DoesNotContain(keys.Keys, k => k.StartsWith("up_blocks.1.attentions", StringComparison.Ordinal));
    }

    [Fact]
    public void Unet_text_time_forward_needs_text_embeds_and_time_ids_and_uses_them()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(TinySdxlUnet));
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(3);
        foreach (var (_, p) in unet.named_parameters()) p.copy_(torch.randn_like(p) * 0.2);
        var sample = torch.randn(2, 4, 12, 16);
        var t = torch.tensor(500L);
        var ehs = torch.randn(2, 7, 40);
        var text = torch.randn(2, 8);
        var ids = torch.tensor(new float[,] { { 24, 32, 0, 0, 24, 32 }, { 24, 32, 0, 0, 24, 32 } });
        Assert.Throws<LensException>(() => unet.Forward(sample, t, ehs));
        Assert.Throws<LensException>(() => unet.Forward(sample, t, ehs, textEmbeds: text));
        var a = unet.Forward(sample, t, ehs, textEmbeds: text, timeIds: ids);
        Assert.Equal(new long[] { 2, 4, 12, 16 }, a.shape);
        var b = unet.Forward(sample, t, ehs, textEmbeds: text, timeIds: ids + 8);
        var c = unet.Forward(sample, t, ehs, textEmbeds: text * 2, timeIds: ids);
        Assert.True((a - b).abs().max().item<float>() > 1e-6, "the time ids do not reach the output");
        Assert.True((a - c).abs().max().item<float>() > 1e-6, "the pooled text embeddings do not reach the output");
    }

    [Fact]
    public void Unet_text_time_without_its_dims_is_an_error_naming_them()
    {
        var json = TinySdxlUnet.Replace("\"addition_time_embed_dim\": 8, ", "");
        var e = Assert.Throws<LensException>(() => UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(json)));
        Assert.Contains("addition_time_embed_dim", e.Message);
    }

    private static ClipTextConfig TinyClip => new(VocabSize: 49408, HiddenSize: 24, IntermediateSize: 48, NumHiddenLayers: 3,
        NumAttentionHeads: 2, MaxPositionEmbeddings: 77, HiddenAct: "gelu", LayerNormEps: 1e-5);

    private static ClipTextModelWithProjection RandomClip2(long eosTokenId)
    {
        var m = new ClipTextModelWithProjection(TinyClip, projectionDim: 8, eosTokenId: eosTokenId);
        using var noGrad = torch.no_grad();
        torch.manual_seed(11);
        foreach (var (_, p) in m.named_parameters()) p.copy_(torch.randn_like(p) * 0.3);
        return m;
    }

    [Fact]
    public void Clip_with_projection_has_transformers_keys()
    {
        using var m = new ClipTextModelWithProjection(TinyClip, projectionDim: 8, eosTokenId: 2);
        var keys = Keys(m);
        Assert.Equal(new long[] { 8, 24 }, keys["text_projection.weight"]);
        Assert.DoesNotContain("text_projection.bias", keys.Keys);
        Assert.Contains("text_model.embeddings.token_embedding.weight", keys.Keys);
        Assert.Contains("text_model.encoder.layers.2.mlp.fc2.weight", keys.Keys);
        Assert.Contains("text_model.final_layer_norm.weight", keys.Keys);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Clip_with_projection_loads_keys_with_and_without_the_text_model_level(bool prefixed)
    {
        using var src = RandomClip2(2);
        var dir = Directory.CreateTempSubdirectory("lens-clip2-").FullName;
        try
        {
            var file = Path.Combine(dir, "model.safetensors");
            var tensors = src.state_dict().Select(kv => new KeyValuePair<string, Tensor>(
                prefixed || !kv.Key.StartsWith("text_model.", StringComparison.Ordinal) ? kv.Key : kv.Key["text_model.".Length..], kv.Value));
            SafetensorsFile.Write(file, tensors.ToList());
            using var dst = new ClipTextModelWithProjection(TinyClip, projectionDim: 8, eosTokenId: 2);
            dst.LoadWeights(WeightSet.FromFiles(file, [file]));
            foreach (var (k, v) in src.state_dict()) Assert.True(ReferenceData.Identical(v, dst.state_dict()[k]), k);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>transformers' pooling position: argmax of the ids for eos_token_id 2, else the first eos_token_id.</summary>
    [Fact]
    public void Pooled_output_is_projected_at_transformers_eos_position()
    {
        var ids = torch.tensor(new long[] { 49406, 5, 320, 49407, 5, 0, 0 }).unsqueeze(0);
        foreach (var (eos, pos) in new[] { (2L, 3L), (5L, 1L) })
        {
            using var m = RandomClip2(eos);
            using var scope = NewDisposeScope();
            using var output = m.Encode(ids);
            var pooled = m.Pooled(output.LastHiddenState, ids);
            var w = m.state_dict()["text_projection.weight"];
            var expected = torch.matmul(output.LastHiddenState[0, pos], w.t()).unsqueeze(0);
            Assert.True(torch.allclose(pooled, expected, rtol: 1e-5, atol: 1e-6), $"eos_token_id {eos}: not pooled at position {pos}");
        }
    }

    /// <summary>The lens' recomputation: the last layer run on the unmodified penultimate output is the model's own
    /// last_hidden_state (so lens layer N-2 without the layer norm is the stock text_encoder_2 output).</summary>
    [Fact]
    public void Last_layer_recomputed_from_the_penultimate_output_is_the_models_own()
    {
        using var m = RandomClip2(2);
        using var scope = NewDisposeScope();
        var ids = torch.tensor(new long[] { 49406, 320, 1125, 49407, 0, 0, 0 }).unsqueeze(0);
        using var output = m.Encode(ids);
        var again = m.LastHiddenStateFrom(m.NumLayers - 1, output.Hidden[^2]);
        Assert.True(torch.allclose(again, output.LastHiddenState, rtol: 1e-5, atol: 1e-6));
        Assert.True(torch.allclose(m.forward(ids), m.Pooled(again, ids), rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void Conditioning_pack_and_unpack_round_trip()
    {
        using var scope = NewDisposeScope();
        var prompt = torch.randn(3, 5, 40);
        var pooled = torch.randn(3, 8);
        var packed = PooledConditioning.Pack(prompt, pooled);
        Assert.Equal(new long[] { 3, 5, 48 }, packed.shape);
        var (p, q) = PooledConditioning.Unpack(packed, 40);
        Assert.True(ReferenceData.Identical(p, prompt));
        Assert.True(ReferenceData.Identical(q, pooled));
    }
}
