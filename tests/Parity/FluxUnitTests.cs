using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Pipelines;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// FLUX's pieces against diffusers' definitions (expected values derived by hand from diffusers' code, cited per test):
/// the transformer's state-dict keys from diffusers' module names, the 2x2 latent packing and its inverse, the latent
/// image ids, the rotary embedding and its application, and FlowMatchEulerDiscreteScheduler's schedules and step.
/// </summary>
public class FluxUnitTests
{
    [Fact]
    public void Transformer_keys_follow_diffusers_names()
    {
        using var m = FluxTransformer2DModel.FromConfig(DiffusersConfig.FromJson(FluxModel.TransformerJson));
        var keys = m.state_dict().Keys.ToHashSet();
        // transformer_flux.py: x_embedder/context_embedder Linear, time_text_embed (timestep_embedder, text_embedder),
        // FluxTransformerBlock (norm1(.linear), norm1_context, attn with added projections and RMS norms, ff.net.0.proj,
        // ff.net.2, ff_context), FluxSingleTransformerBlock (norm.linear, proj_mlp, proj_out, attn without to_out),
        // norm_out.linear, proj_out; pos_embed and the LayerNorms without affine parameters have none
        string[] expected =
        {
            "x_embedder.weight", "x_embedder.bias", "context_embedder.weight", "context_embedder.bias",
            "time_text_embed.timestep_embedder.linear_1.weight", "time_text_embed.timestep_embedder.linear_2.bias",
            "time_text_embed.text_embedder.linear_1.weight", "time_text_embed.text_embedder.linear_2.weight",
            "transformer_blocks.0.norm1.linear.weight", "transformer_blocks.0.norm1_context.linear.bias",
            "transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_k.bias", "transformer_blocks.0.attn.to_v.weight",
            "transformer_blocks.0.attn.norm_q.weight", "transformer_blocks.0.attn.norm_k.weight",
            "transformer_blocks.0.attn.add_q_proj.weight", "transformer_blocks.0.attn.add_k_proj.bias", "transformer_blocks.0.attn.add_v_proj.weight",
            "transformer_blocks.0.attn.norm_added_q.weight", "transformer_blocks.0.attn.norm_added_k.weight",
            "transformer_blocks.0.attn.to_out.0.weight", "transformer_blocks.0.attn.to_add_out.weight",
            "transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff.net.2.weight",
            "transformer_blocks.0.ff_context.net.0.proj.bias", "transformer_blocks.0.ff_context.net.2.bias",
            "single_transformer_blocks.0.norm.linear.weight", "single_transformer_blocks.0.proj_mlp.weight",
            "single_transformer_blocks.0.proj_out.weight", "single_transformer_blocks.0.attn.to_q.weight",
            "single_transformer_blocks.0.attn.norm_q.weight", "norm_out.linear.weight", "proj_out.weight", "proj_out.bias",
        };
        foreach (var k in expected) Assert.Contains(k, keys);
        Assert.DoesNotContain(keys, k => k.StartsWith("pos_embed") || k.Contains("norm2") || k.Contains("guidance_embedder")
            || k.StartsWith("single_transformer_blocks.0.attn.to_out") || k.StartsWith("norm_out.norm"));
        // norm1, norm1_context (2 + 2), attn (q/k/v, out, add q/k/v, add out: 16 weights and biases; 4 RMS norms), ff, ff_context (4 + 4)
        Assert.Equal(32, keys.Count(k => k.StartsWith("transformer_blocks.0.")));
        // shapes: inner dim 16 (2 heads x 8); AdaLayerNormZero 6x, single 3x, continuous 2x; proj_out to in_channels
        var sd = m.state_dict();
        Assert.Equal(new long[] { 96, 16 }, sd["transformer_blocks.0.norm1.linear.weight"].shape);
        Assert.Equal(new long[] { 48, 16 }, sd["single_transformer_blocks.0.norm.linear.weight"].shape);
        Assert.Equal(new long[] { 16, 16 + 64 }, sd["single_transformer_blocks.0.proj_out.weight"].shape);
        Assert.Equal(new long[] { 32, 16 }, sd["norm_out.linear.weight"].shape);
        Assert.Equal(new long[] { 64, 16 }, sd["proj_out.weight"].shape);
        Assert.Equal(new long[] { 8 }, sd["transformer_blocks.0.attn.norm_q.weight"].shape);

        using var dev = FluxTransformer2DModel.FromConfig(DiffusersConfig.FromJson(FluxModel.TransformerJson.Replace("\"guidance_embeds\": false", "\"guidance_embeds\": true")));
        Assert.Contains("time_text_embed.guidance_embedder.linear_1.weight", dev.state_dict().Keys);
    }

    [Fact]
    public void Packing_takes_2x2_patches_channel_major_and_unpacks_back()
    {
        // _pack_latents: view(B, C, h/2, 2, w/2, 2).permute(0, 2, 4, 1, 3, 5): token (i, j) holds, for each channel c,
        // the patch rows dy and columns dx: feature index c*4 + dy*2 + dx
        var latents = torch.arange(2 * 3 * 4 * 6, dtype: ScalarType.Float32).reshape(2, 3, 4, 6);
        var packed = FluxPipeline.Pack(latents);
        Assert.Equal(new long[] { 2, 2 * 3, 12 }, packed.shape);
        for (int b = 0; b < 2; b++)
        for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
        for (int c = 0; c < 3; c++)
        for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++)
            Assert.Equal(latents[b, c, 2 * i + dy, 2 * j + dx].item<float>(), packed[b, i * 3 + j, c * 4 + dy * 2 + dx].item<float>());
        Assert.True(torch.equal(latents, FluxPipeline.Unpack(packed, 4, 6)).all().item<bool>());
    }

    [Fact]
    public void Latent_image_ids_are_zero_row_column()
    {
        var ids = FluxPipeline.LatentImageIds(2, 3, ScalarType.Float32, torch.CPU);
        var expected = torch.tensor(new float[] { 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 0, 0, 1, 1, 0, 1, 2 }).reshape(6, 3);
        Assert.True(torch.equal(ids, expected).all().item<bool>());
    }

    [Fact]
    public void Rotary_embedding_interleaves_cos_and_sin_and_rotates_pairs()
    {
        // get_1d_rotary_pos_embed(4, pos, theta=10000, use_real=True, repeat_interleave_real=True): freqs = [1, 10000^-0.5]
        var (cos, sin) = FluxPosEmbed.RotaryPosEmbed(4, torch.tensor(new float[] { 0, 2 }), 10000);
        double f1 = 2.0, f2 = 2.0 / 100.0;
        Assert.Equal(new[] { 1f, 1f, 1f, 1f, (float)Math.Cos(f1), (float)Math.Cos(f1), (float)Math.Cos(f2), (float)Math.Cos(f2) }, cos.data<float>().ToArray());
        Assert.Equal(new[] { 0f, 0f, 0f, 0f, (float)Math.Sin(f1), (float)Math.Sin(f1), (float)Math.Sin(f2), (float)Math.Sin(f2) }, sin.data<float>().ToArray());
        // apply_rotary_emb(use_real_unbind_dim=-1): each pair (a, b) -> (a cos - b sin, b cos + a sin)
        var x = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(1, 1, 1, 4);
        var c = torch.tensor(new float[] { 0.6f, 0.6f, 0f, 0f }).reshape(1, 4);
        var s = torch.tensor(new float[] { 0.8f, 0.8f, 1f, 1f }).reshape(1, 4);
        var y = FluxPosEmbed.ApplyRotaryEmb(x, c, s).data<float>().ToArray();
        Assert.Equal(new[] { 1 * 0.6f - 2 * 0.8f, 2 * 0.6f + 1 * 0.8f, -4f, 3f }, y);
    }

    [Fact]
    public void Schnell_schedule_is_linear_in_sigma_and_the_step_is_euler()
    {
        using var s = (FlowMatchEulerDiscreteScheduler)Scheduler.FromConfig(DiffusersConfig.FromJson(FluxModel.SchnellSchedulerJson));
        // FluxPipeline: sigmas = np.linspace(1, 1/4, 4); shift 1 leaves them; timesteps = sigmas * 1000
        s.SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(4), s.CalculateShift(1024));
        Assert.Equal(new[] { 1000.0, 750.0, 500.0, 250.0 }, s.TimestepValues);
        Assert.Equal(new[] { 1f, 0.75f, 0.5f, 0.25f, 0f }, s.Sigmas.data<float>().ToArray());
        // step: prev = sample + (sigma_next - sigma) * model_output
        var sample = torch.ones(1, 2, 2, 2);
        var v = torch.full(new long[] { 1, 2, 2, 2 }, 2f);
        var prev = s.Step(v, 1000, sample);
        Assert.True(torch.allclose(prev, torch.full(new long[] { 1, 2, 2, 2 }, 0.5f)));
        Assert.Throws<LensException>(() => s.Step(v, 250, prev)); // out of order
        // one step (the tutorial's): t = 1000, sigma 1 -> 0
        s.SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(1), 0.5);
        Assert.Equal(new[] { 1000.0 }, s.TimestepValues);
        Assert.Equal(new[] { 1f, 0f }, s.Sigmas.data<float>().ToArray());
    }

    [Fact]
    public void Dev_schedule_is_time_shifted_by_the_image_size()
    {
        using var s = (FlowMatchEulerDiscreteScheduler)Scheduler.FromConfig(DiffusersConfig.FromJson(FluxModel.DevSchedulerJson));
        // calculate_shift(1024, 256, 4096, 0.5, 1.15) = 1024 * 0.65/3840 + (0.5 - 256 * 0.65/3840) = 0.63
        double mu = s.CalculateShift(1024);
        Assert.Equal(0.63, mu, 12);
        s.SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(2), mu);
        // exponential time shift: e^mu / (e^mu + (1/sigma - 1)); sigma 1 stays 1; sigma 0.5 -> e^0.63 / (e^0.63 + 1)
        float e = (float)Math.Exp(0.63);
        Assert.Equal(new[] { 1f, e / (e + 1f), 0f }, s.Sigmas.data<float>().ToArray());
        Assert.Throws<LensException>(() => s.SetTimesteps(2)); // dynamic shifting needs the pipeline's mu
    }

    [Theory]
    [InlineData("invert_sigmas", "true")]
    [InlineData("stochastic_sampling", "true")]
    [InlineData("use_karras_sigmas", "true")]
    [InlineData("shift_terminal", "0.1")]
    [InlineData("time_shift_type", "\"cubic\"")]
    public void Unsupported_scheduler_options_are_errors_naming_them(string key, string value)
    {
        var json = FluxModel.SchnellSchedulerJson.TrimEnd().TrimEnd('}') + $", \"{key}\": {value}}}";
        var e = Assert.Throws<LensException>(() => Scheduler.FromConfig(DiffusersConfig.FromJson(json)));
        Assert.Contains(key, e.Message);
    }
}
