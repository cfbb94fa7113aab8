using DiffusionLens;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Shape, key-name and error-message checks of the UNet / VAE modules built from small configs (the same tiny
/// configurations fixtures/make_reference.py builds with real diffusers). Numerical parity is tested against fixtures
/// elsewhere.
/// </summary>
public class ModelsShapeTests
{
    // fixtures/make_reference.py "sd-tiny-12" unet (SD 1.x-like: conv projections, 4 levels)
    private const string Sd12Unet = """
    {
      "_class_name": "UNet2DConditionModel",
      "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
      "block_out_channels": [32, 32, 64, 64],
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
      "cross_attention_dim": 32, "attention_head_dim": 4, "norm_num_groups": 8,
      "num_attention_heads": null, "mid_block_only_cross_attention": null,
      "act_fn": "silu", "center_input_sample": false, "flip_sin_to_cos": true, "freq_shift": 0,
      "downsample_padding": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "dual_cross_attention": false,
      "only_cross_attention": false, "use_linear_projection": false, "upcast_attention": false,
      "class_embed_type": null, "addition_embed_type": null, "encoder_hid_dim": null, "encoder_hid_dim_type": null,
      "time_cond_proj_dim": null, "time_embedding_type": "positional", "transformer_layers_per_block": 1,
      "reverse_transformer_layers_per_block": null, "resnet_time_scale_shift": "default", "conv_in_kernel": 3,
      "conv_out_kernel": 3, "attention_type": "default", "class_embeddings_concat": false
    }
    """;

    // fixtures/make_reference.py "sd-tiny-b" unet (SD 2.x-like: linear projections, per-block head counts)
    private const string Sd2Unet = """
    {
      "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
      "block_out_channels": [32, 48],
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
      "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
      "cross_attention_dim": 24, "attention_head_dim": [4, 6], "norm_num_groups": 16,
      "use_linear_projection": true, "upcast_attention": true
    }
    """;

    private const string TinyVae = """
    {
      "_class_name": "AutoencoderKL",
      "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
      "block_out_channels": [16, 16, 32, 32],
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
      "norm_num_groups": 8, "sample_size": 64, "scaling_factor": 0.13025, "shift_factor": null
    }
    """;

    private static Dictionary<string, long[]> Keys(nn.Module m) =>
        m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    private static void HasKey(Dictionary<string, long[]> keys, string key, params long[] shape)
    {
        Assert.True(keys.ContainsKey(key), $"missing state-dict key '{key}'");
        if (shape.Length > 0) Assert.Equal(shape, keys[key]);
    }

    [Fact]
    public void Sd1UNet_ForwardShapeAndKeys()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Sd12Unet));
        unet.eval();
        Assert.Equal(3, unet.NumUpsamplers);
        var k = Keys(unet);
        HasKey(k, "conv_in.weight", 32, 4, 3, 3);
        HasKey(k, "time_embedding.linear_1.weight", 128, 32);
        HasKey(k, "time_embedding.linear_2.bias", 128);
        HasKey(k, "down_blocks.0.resnets.0.time_emb_proj.weight", 32, 128);
        HasKey(k, "down_blocks.0.attentions.0.norm.weight", 32);
        HasKey(k, "down_blocks.0.attentions.0.proj_in.weight", 32, 32, 1, 1);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight", 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", 32, 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", 32, 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias", 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", 32, 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", 256, 32);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight", 32, 128);
        HasKey(k, "down_blocks.0.attentions.0.transformer_blocks.0.norm3.bias", 32);
        HasKey(k, "down_blocks.0.downsamplers.0.conv.weight", 32, 32, 3, 3);
        HasKey(k, "down_blocks.2.resnets.0.conv_shortcut.weight", 64, 32, 1, 1);
        HasKey(k, "mid_block.resnets.1.norm2.weight", 64);
        HasKey(k, "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight", 64, 32);
        HasKey(k, "up_blocks.0.resnets.1.conv1.weight", 64, 128, 3, 3);
        HasKey(k, "up_blocks.0.upsamplers.0.conv.weight", 64, 64, 3, 3);
        HasKey(k, "up_blocks.3.attentions.1.proj_out.weight", 32, 32, 1, 1);
        HasKey(k, "up_blocks.3.resnets.1.conv_shortcut.weight", 32, 64, 1, 1);
        HasKey(k, "conv_norm_out.weight", 32);
        HasKey(k, "conv_out.bias", 4);
        // attention projections have no bias in the UNet; dropout and time_proj have no parameters
        Assert.DoesNotContain("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias", k.Keys);
        Assert.DoesNotContain(k.Keys, key => key.Contains("to_out.1") || key.StartsWith("time_proj") || key.Contains("downsamplers.0.Conv2d_0"));
        Assert.DoesNotContain(k.Keys, key => key.StartsWith("up_blocks.3.upsamplers"));
        // up blocks have layers_per_block + 1 resnets
        HasKey(k, "up_blocks.1.resnets.1.norm1.weight");
        Assert.DoesNotContain("up_blocks.1.resnets.2.norm1.weight", k.Keys);

        using var _ = torch.no_grad();
        using var sample = torch.randn(2, 4, 8, 8);
        using var t = torch.tensor(10L);
        using var enc = torch.randn(2, 7, 32);
        using var outp = unet.Forward(sample, t, enc);
        Assert.Equal(new long[] { 2, 4, 8, 8 }, outp.shape);
        Assert.False(outp.isnan().any().item<bool>());
    }

    [Fact]
    public void Sd1UNet_SizeNotMultipleOfUpFactor_ForwardsUpsampleSize()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Sd12Unet));
        unet.eval();
        using var _ = torch.no_grad();
        using var sample = torch.randn(1, 4, 9, 7);
        using var t = torch.tensor(new float[] { 500.5f });
        using var enc = torch.randn(1, 5, 32);
        using var mask = torch.tensor(new long[] { 1, 1, 1, 0, 0 }).unsqueeze(0);
        using var outp = unet.Forward(sample, t, enc, encoderAttentionMask: mask);
        Assert.Equal(new long[] { 1, 4, 9, 7 }, outp.shape);
    }

    [Fact]
    public void Sd2UNet_LinearProjectionAndPerBlockHeads()
    {
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Sd2Unet));
        unet.eval();
        var k = Keys(unet);
        HasKey(k, "down_blocks.1.attentions.1.proj_in.weight", 48, 48);
        HasKey(k, "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight", 48, 24);
        HasKey(k, "mid_block.attentions.0.proj_out.weight", 48, 48);
        HasKey(k, "up_blocks.0.attentions.2.transformer_blocks.0.attn1.to_v.weight", 48, 48);
        HasKey(k, "up_blocks.0.resnets.2.conv1.weight", 48, 80, 3, 3);
        HasKey(k, "up_blocks.1.resnets.0.conv1.weight", 32, 80, 3, 3);
        Assert.DoesNotContain(k.Keys, key => key.StartsWith("down_blocks.0.attentions"));

        using var _ = torch.no_grad();
        using var sample = torch.randn(2, 4, 20, 16);
        using var t = torch.tensor(new long[] { 999, 999 });
        using var enc = torch.randn(2, 77, 24);
        using var outp = unet.Forward(sample, t, enc);
        Assert.Equal(new long[] { 2, 4, 20, 16 }, outp.shape);
    }

    [Fact]
    public void UNet_HeadCountFollowsTheLegacyRule()
    {
        // attention_head_dim is the head COUNT: 48 channels / 6 heads = 8 channels a head; up blocks use reversed lists.
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(Sd2Unet));
        var attn = unet.named_modules().Where(m => m.module is Attention)
            .ToDictionary(m => m.name, m => (Attention)m.module);
        Assert.Equal(6, attn["down_blocks.1.attentions.0.transformer_blocks.0.attn1"].Heads);
        Assert.Equal(8, attn["down_blocks.1.attentions.0.transformer_blocks.0.attn1"].DimHead);
        Assert.Equal(6, attn["mid_block.attentions.0.transformer_blocks.0.attn2"].Heads);
        Assert.Equal(6, attn["up_blocks.0.attentions.0.transformer_blocks.0.attn2"].Heads);
    }

    [Fact]
    public void UNet_TransformerLayersPerBlock_PerBlockListIsReversedForUpBlocks()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Sd2Unet)!.AsObject();
        node["down_block_types"] = System.Text.Json.Nodes.JsonNode.Parse("[\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"]");
        node["up_block_types"] = System.Text.Json.Nodes.JsonNode.Parse("[\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]");
        node["transformer_layers_per_block"] = System.Text.Json.Nodes.JsonNode.Parse("[1, 2]");
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString()));
        var k = Keys(unet).Keys.ToHashSet();
        Assert.Contains("down_blocks.0.attentions.1.transformer_blocks.0.norm1.weight", k);
        Assert.DoesNotContain("down_blocks.0.attentions.1.transformer_blocks.1.norm1.weight", k);
        Assert.Contains("down_blocks.1.attentions.1.transformer_blocks.1.norm1.weight", k);
        Assert.Contains("mid_block.attentions.0.transformer_blocks.1.norm1.weight", k);
        Assert.Contains("up_blocks.0.attentions.2.transformer_blocks.1.norm1.weight", k);
        Assert.DoesNotContain("up_blocks.1.attentions.2.transformer_blocks.1.norm1.weight", k);

        node["transformer_layers_per_block"] = System.Text.Json.Nodes.JsonNode.Parse("[[1, 1], [2, 2]]");
        var ex = Assert.Throws<LensException>(() => UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString())));
        Assert.Contains("reverse_transformer_layers_per_block", ex.Message);
    }

    [Fact]
    public void Vae_EncodeDecodeShapesAndKeys()
    {
        using var vae = AutoencoderKL.FromConfig(DiffusersConfig.FromJson(TinyVae));
        vae.eval();
        Assert.Equal(8, vae.ScaleFactor);
        Assert.Equal(0.13025, vae.ScalingFactor);
        Assert.Null(vae.ShiftFactor);
        var k = Keys(vae);
        HasKey(k, "encoder.conv_in.weight", 16, 3, 3, 3);
        HasKey(k, "encoder.down_blocks.0.downsamplers.0.conv.weight", 16, 16, 3, 3);
        Assert.DoesNotContain(k.Keys, key => key.StartsWith("encoder.down_blocks.3.downsamplers"));
        HasKey(k, "encoder.down_blocks.2.resnets.0.conv_shortcut.weight", 32, 16, 1, 1);
        HasKey(k, "encoder.mid_block.attentions.0.group_norm.weight", 32);
        HasKey(k, "encoder.mid_block.attentions.0.to_q.weight", 32, 32);
        HasKey(k, "encoder.mid_block.attentions.0.to_q.bias", 32);
        HasKey(k, "encoder.mid_block.attentions.0.to_out.0.weight", 32, 32);
        HasKey(k, "encoder.conv_out.weight", 8, 32, 3, 3);
        HasKey(k, "quant_conv.weight", 8, 8, 1, 1);
        HasKey(k, "post_quant_conv.weight", 4, 4, 1, 1);
        HasKey(k, "decoder.conv_in.weight", 32, 4, 3, 3);
        HasKey(k, "decoder.mid_block.resnets.1.conv2.weight", 32, 32, 3, 3);
        HasKey(k, "decoder.mid_block.attentions.0.to_v.weight", 32, 32);
        HasKey(k, "decoder.up_blocks.0.upsamplers.0.conv.weight", 32, 32, 3, 3);
        HasKey(k, "decoder.up_blocks.0.resnets.1.conv1.weight", 32, 32, 3, 3);
        Assert.DoesNotContain("decoder.up_blocks.0.resnets.2.conv1.weight", k.Keys);
        HasKey(k, "decoder.up_blocks.2.resnets.0.conv_shortcut.weight", 16, 32, 1, 1);
        HasKey(k, "decoder.conv_norm_out.weight", 16);
        HasKey(k, "decoder.conv_out.weight", 3, 16, 3, 3);
        Assert.DoesNotContain(k.Keys, key => key.Contains("time_emb_proj"));
        Assert.Equal(new[] { "decoder.mid_block.attentions.0", "encoder.mid_block.attentions.0" },
            vae.DeprecatedAttentionPaths().OrderBy(p => p).ToArray());

        using var _ = torch.no_grad();
        using var z = torch.randn(1, 4, 8, 8);
        using var image = vae.Decode(z);
        Assert.Equal(new long[] { 1, 3, 64, 64 }, image.shape);
        using var x = torch.randn(2, 3, 64, 48);
        using var dist = vae.Encode(x);
        Assert.Equal(new long[] { 2, 4, 8, 6 }, dist.Mean.shape);
        Assert.Equal(new long[] { 2, 4, 8, 6 }, dist.LogVar.shape);
        Assert.True(dist.LogVar.max().item<float>() <= 20f);
    }

    [Fact]
    public void Vae_WithoutQuantConvsOrMidAttention()
    {
        var json = TinyVae.Replace("\"shift_factor\": null", "\"shift_factor\": 0.1159, \"use_quant_conv\": false, \"use_post_quant_conv\": false, \"mid_block_add_attention\": false");
        using var vae = AutoencoderKL.FromConfig(DiffusersConfig.FromJson(json));
        var k = Keys(vae);
        Assert.DoesNotContain(k.Keys, key => key.Contains("quant_conv") || key.Contains("attentions"));
        Assert.Equal(0.1159, vae.ShiftFactor);
        using var _ = torch.no_grad();
        using var z = torch.randn(1, 4, 4, 4);
        using var image = vae.Decode(z);
        Assert.Equal(new long[] { 1, 3, 32, 32 }, image.shape);
    }

    [Theory]
    [InlineData("down_block_types", "[\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"FancyDownBlock2D\", \"DownBlock2D\"]", "FancyDownBlock2D")]
    [InlineData("up_block_types", "[\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"WeirdUpBlock\"]", "WeirdUpBlock")]
    [InlineData("mid_block_type", "\"MysteryMidBlock\"", "MysteryMidBlock")]
    public void UNet_UnknownBlockType_Throws(string key, string value, string name)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Sd12Unet)!.AsObject();
        node[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
        var ex = Assert.Throws<LensException>(() => UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString())));
        Assert.Contains(name, ex.Message);
    }

    [Fact]
    public void Vae_UnknownBlockType_Throws()
    {
        var json = TinyVae.Replace("[\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]",
            "[\"UpDecoderBlock2D\", \"AttnUpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]");
        var ex = Assert.Throws<LensException>(() => AutoencoderKL.FromConfig(DiffusersConfig.FromJson(json)));
        Assert.Contains("AttnUpDecoderBlock2D", ex.Message);
    }

    [Fact]
    public void UNet_NullMidBlockType_HasNoMidBlock()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Sd12Unet)!.AsObject();
        node["mid_block_type"] = null;
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString()));
        Assert.DoesNotContain(Keys(unet).Keys, key => key.StartsWith("mid_block"));
        using var _ = torch.no_grad();
        using var outp = unet.Forward(torch.randn(1, 4, 8, 8), torch.tensor(3), torch.randn(1, 4, 32));
        Assert.Equal(new long[] { 1, 4, 8, 8 }, outp.shape);
    }

    [Fact]
    public void UNet_NullNormGroups_WithResnetBlocks_Throws()
    {
        // diffusers itself fails here (GroupNorm(None)); the SD blocks need norm_num_groups.
        var node = System.Text.Json.Nodes.JsonNode.Parse(Sd12Unet)!.AsObject();
        node["norm_num_groups"] = null;
        var ex = Assert.Throws<LensException>(() => UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString())));
        Assert.Contains("norm_num_groups", ex.Message);
    }

    [Fact]
    public void UNet_UnsupportedOptions_Throw()
    {
        foreach (var (key, value) in new[] { ("num_attention_heads", "8"), ("class_embed_type", "\"identity\""),
                     ("addition_embed_type", "\"text_time\""), ("time_embedding_type", "\"fourier\""), ("dual_cross_attention", "true") })
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(Sd12Unet)!.AsObject();
            node[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
            var ex = Assert.Throws<LensException>(() => UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString())));
            Assert.Contains(key, ex.Message);
        }
    }

    [Fact]
    public void TimestepEmbedding_MatchesFormula()
    {
        using var t = torch.tensor(new long[] { 0, 10, 981 });
        using var emb = Timesteps.GetTimestepEmbedding(t, 8, flipSinToCos: true, downscaleFreqShift: 0);
        Assert.Equal(new long[] { 3, 8 }, emb.shape);
        Assert.Equal(ScalarType.Float32, emb.dtype);
        var v = emb.data<float>().ToArray();
        double[] ts = [0, 10, 981];
        for (int r = 0; r < 3; r++)
            for (int j = 0; j < 4; j++)
            {
                double arg = ts[r] * Math.Exp(-Math.Log(10000) * j / 4.0);
                Assert.Equal(Math.Cos(arg), v[r * 8 + j], 3e-4);     // flip: cos first
                Assert.Equal(Math.Sin(arg), v[r * 8 + 4 + j], 3e-4);
            }
        using var odd = Timesteps.GetTimestepEmbedding(t, 7);
        Assert.Equal(new long[] { 3, 7 }, odd.shape);
        Assert.Equal(0f, odd[1, 6].item<float>());
    }

    [Fact]
    public void Geglu_IsHiddenTimesGeluOfGate()
    {
        using var geglu = new GEGLU(1, 1);
        var p = geglu.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        using (torch.no_grad())
        {
            p["proj.weight"].copy_(torch.tensor(new float[] { 2f, -1f }).reshape(2, 1));
            p["proj.bias"].zero_();
        }
        using var x = torch.tensor(new float[] { 1.5f }).reshape(1, 1);
        using var y = geglu.forward(x);
        double hidden = 3.0, gate = -1.5;
        double gelu = 0.5 * gate * (1 + Erf(gate / Math.Sqrt(2)));
        Assert.Equal(hidden * gelu, y.item<float>(), 1e-5);
    }

    private static double Erf(double x)
    {
        // Abramowitz-Stegun 7.1.26 is too coarse; integrate numerically instead.
        int n = 20000; double h = x / n, s = 0;
        for (int i = 0; i <= n; i++) { double w = i == 0 || i == n ? 1 : (i % 2 == 1 ? 4 : 2); s += w * Math.Exp(-(i * h) * (i * h)); }
        return 2 / Math.Sqrt(Math.PI) * s * h / 3;
    }

    [Fact]
    public void Attention_MatchesExplicitMultiHeadSoftmax()
    {
        using var _ = torch.no_grad();
        torch.manual_seed(3);
        using var attn = new Attention(12, crossAttentionDim: 10, heads: 3, dimHead: 4, bias: false);
        attn.eval();
        using var x = torch.randn(2, 5, 12);
        using var enc = torch.randn(2, 6, 10);
        using var mask = torch.tensor(new float[] { 0, 0, 0, 0, -10000, -10000, 0, 0, 0, 0, 0, -10000 }).reshape(2, 1, 6);
        using var y = attn.forward(x, enc, mask);

        var p = attn.named_parameters().ToDictionary(q => q.name, q => q.parameter);
        using var scope = torch.NewDisposeScope();
        var q = torch.matmul(x, p["to_q.weight"].t()).reshape(2, 5, 3, 4).permute(0, 2, 1, 3);
        var k = torch.matmul(enc, p["to_k.weight"].t()).reshape(2, 6, 3, 4).permute(0, 2, 1, 3);
        var v = torch.matmul(enc, p["to_v.weight"].t()).reshape(2, 6, 3, 4).permute(0, 2, 1, 3);
        var scores = torch.matmul(q, k.transpose(-1, -2)) / Math.Sqrt(4) + mask.unsqueeze(1);
        var o = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(2, 5, 12);
        var expected = torch.matmul(o, p["to_out.0.weight"].t()) + p["to_out.0.bias"];
        Assert.True(torch.allclose(y, expected, rtol: 1e-4, atol: 1e-5), "attention differs from the explicit computation");
    }

    [Fact]
    public void Attention_SpatialSelfAttention_MatchesExplicitComputation()
    {
        // The VAE mid-block form: 4-D input, group_norm, one head over all channels, bias, residual connection.
        using var _ = torch.no_grad();
        torch.manual_seed(5);
        using var attn = new Attention(8, heads: 1, dimHead: 8, normNumGroups: 2, eps: 1e-6, bias: true,
            residualConnection: true, upcastSoftmax: true, fromDeprecatedAttnBlock: true);
        attn.eval();
        using var x = torch.randn(2, 8, 3, 5);
        using var y = attn.forward(x, null, null);
        var p = attn.named_parameters().ToDictionary(q => q.name, q => q.parameter);
        using var scope = torch.NewDisposeScope();
        var h = nn.functional.group_norm(x, 2, p["group_norm.weight"], p["group_norm.bias"], 1e-6).reshape(2, 8, 15).transpose(1, 2);
        Tensor Lin(Tensor t, string n) => torch.matmul(t, p[n + ".weight"].t()) + p[n + ".bias"];
        var q = Lin(h, "to_q"); var k = Lin(h, "to_k"); var v = Lin(h, "to_v");
        var o = torch.matmul((torch.matmul(q, k.transpose(1, 2)) / Math.Sqrt(8)).softmax(-1), v);
        var expected = Lin(o, "to_out.0").transpose(1, 2).reshape(2, 8, 3, 5) + x;
        Assert.True(torch.allclose(y, expected, rtol: 1e-4, atol: 1e-5), "spatial attention differs from the explicit computation");
    }

    [Fact]
    public void Transformer2DModel_LinearAndConvProjectionsAgree()
    {
        using var _ = torch.no_grad();
        torch.manual_seed(11);
        using var conv = new Transformer2DModel(2, 8, inChannels: 16, normNumGroups: 4, crossAttentionDim: 12);
        using var linear = new Transformer2DModel(2, 8, inChannels: 16, normNumGroups: 4, crossAttentionDim: 12, useLinearProjection: true);
        conv.eval(); linear.eval();
        var src = conv.state_dict();
        foreach (var (key, target) in linear.state_dict())
            target.copy_(src[key].reshape(target.shape));
        using var x = torch.randn(2, 16, 4, 3);
        using var enc = torch.randn(2, 6, 12);
        using var a = conv.forward(x, enc, null, null);
        using var b = linear.forward(x, enc, null, null);
        Assert.Equal(x.shape, a.shape);
        Assert.True(torch.allclose(a, b, rtol: 1e-4, atol: 1e-5), "conv and linear projections disagree");
    }

    [Fact]
    public void Attention_AddedKv_KeysMatchDiffusersIfBlock()
    {
        // As built by diffusers' SimpleCrossAttnDownBlock2D in the if-tiny-a fixture UNet (64 channels, head dim 8,
        // cross_attention_dim 32, cross_attention_norm "group_norm"); shapes read from its safetensors file.
        using var attn = new Attention(64, crossAttentionDim: 64, heads: 8, dimHead: 8, addedKvProjDim: 32,
            normNumGroups: 32, bias: true, upcastSoftmax: true, crossAttentionNorm: "group_norm",
            crossAttentionNormNumGroups: 32);
        Assert.Equal(AttentionProcessorKind.AttnAddedKVProcessor2_0, attn.Processor);
        var expected = new Dictionary<string, long[]>
        {
            ["add_k_proj.bias"] = [64], ["add_k_proj.weight"] = [64, 32], ["add_v_proj.bias"] = [64],
            ["add_v_proj.weight"] = [64, 32], ["group_norm.bias"] = [64], ["group_norm.weight"] = [64],
            ["norm_cross.bias"] = [32], ["norm_cross.weight"] = [32], ["to_k.bias"] = [64], ["to_k.weight"] = [64, 64],
            ["to_out.0.bias"] = [64], ["to_out.0.weight"] = [64, 64], ["to_q.bias"] = [64], ["to_q.weight"] = [64, 64],
            ["to_v.bias"] = [64], ["to_v.weight"] = [64, 64],
        };
        var k = Keys(attn);
        Assert.Equal(expected.Keys.OrderBy(s => s), k.Keys.OrderBy(s => s));
        foreach (var (key, shape) in expected) Assert.Equal(shape, k[key]);

        attn.eval();
        using var _ = torch.no_grad();
        using var h = torch.randn(2, 64, 4, 3);
        using var enc = torch.randn(2, 7, 32);
        using var mask = torch.zeros(2, 1, 7);
        using var y = attn.forward(h, enc, mask);
        Assert.Equal(h.shape, y.shape);

        using var onlyCross = new Attention(64, crossAttentionDim: 64, heads: 8, dimHead: 8, addedKvProjDim: 32,
            normNumGroups: 32, bias: true, onlyCrossAttention: true);
        Assert.DoesNotContain(Keys(onlyCross).Keys, key => key.StartsWith("to_k") || key.StartsWith("to_v"));
        using var y2 = onlyCross.forward(h, enc, null);
        Assert.Equal(h.shape, y2.shape);
    }
}
