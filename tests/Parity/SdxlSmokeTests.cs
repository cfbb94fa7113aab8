using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using DiffusionLens.TextEncoders;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The SDXL pipeline end to end on a random-weight folder written here (no diffusers numbers: those are
/// SdxlParityTests'): it loads key for key, sweeps layers 0..N-2 at batch 1 and all layers in one batch with the same
/// images (CPU), records the layer-norm setting; and the intervention's own identity: without the layer norm, lens
/// layer N-2 replaces the penultimate output with itself, so its conditioning is the stock text_encoder_2's
/// (hidden_states[-2] and pooled text embeddings) next to text_encoder's for the empty prompt.
/// </summary>
[Collection("pipelines")]
public class SdxlSmokeTests
{
    /// <summary>A random-weight SDXL folder: text_encoder 3 layers, text_encoder_2 4 layers (lens layers 0..2).</summary>
    private static string RandomSdxl()
    {
        var dir = CliRunner.TempPath("sdxl-random");
        var models = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), """
        {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true,
         "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
        """);
        RandomFolder.CopyDir(Path.Combine(models, "sd-tiny-12", "tokenizer"), Path.Combine(dir, "tokenizer"));
        RandomFolder.CopyDir(Path.Combine(models, "sd2-tiny", "tokenizer"), Path.Combine(dir, "tokenizer_2")); // pads with "!"
        const string te1 = """{"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "hidden_act": "quick_gelu", "eos_token_id": 2}""";
        const string te2 = """{"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 4, "num_attention_heads": 2, "hidden_act": "gelu", "projection_dim": 8, "eos_token_id": 2}""";
        using (var m = new ClipTextModel(ClipTextConfig.FromConfig(DiffusersConfig.FromJson(te1)))) RandomFolder.Component(m, 1, 0.1, Path.Combine(dir, "text_encoder"), "model.safetensors", te1);
        using (var m = new ClipTextModelWithProjection(ClipTextConfig.FromConfig(DiffusersConfig.FromJson(te2)), 8, 2)) RandomFolder.Component(m, 2, 0.1, Path.Combine(dir, "text_encoder_2"), "model.safetensors", te2);
        var unetJson = SdxlUnitTests.TinySdxlUnet;
        using (var m = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(unetJson))) RandomFolder.Component(m, 3, 0.1, Path.Combine(dir, "unet"), "diffusion_pytorch_model.safetensors", unetJson);
        const string vae = """{"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "latent_channels": 4, "norm_num_groups": 8, "layers_per_block": 1, "scaling_factor": 0.13025, "force_upcast": true}""";
        using (var m = AutoencoderKL.FromConfig(DiffusersConfig.FromJson(vae))) RandomFolder.Component(m, 4, 0.1, Path.Combine(dir, "vae"), "diffusion_pytorch_model.safetensors", vae);
        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), """
        {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
         "timestep_spacing": "leading", "use_karras_sigmas": false}
        """);
        return dir;
    }

    [Fact]
    public void Sweeps_layers_zero_to_N_minus_two_alike_at_any_batch()
    {
        var dir = RandomSdxl();
        var outs = new List<string>();
        try
        {
            var images = new List<Dictionary<int, byte[]>>();
            foreach (int batch in new[] { 1, 3 })
            {
                var outDir = CliRunner.TempPath($"sdxl-smoke-b{batch}");
                outs.Add(outDir);
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = dir, Prompt = "a cat on a mat", Steps = 2, Height = 24, Width = 32, OutDir = outDir,
                    Batch = batch, LensLayerNorm = false,
                });
                Assert.Equal(new[] { 0, 1, 2 }, res.Layers);
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal("StableDiffusionXLPipeline", m["pipeline"]!.GetValue<string>());
                Assert.False(m["lens_layer_norm"]!.GetValue<bool>());
                Assert.Equal(5.0, m["guidance"]!.GetValue<double>()); // SDXL's default
                images.Add(res.LayerImages.ToDictionary(kv => kv.Key, kv => RgbImage.Load(kv.Value).Pixels.ToArray()));
            }
            foreach (var l in images[0].Keys) Assert.Equal(images[0][l], images[1][l]);
            Assert.NotEqual(images[0][0], images[0][2]); // the layers condition differently
        }
        finally
        {
            Directory.Delete(dir, true);
            foreach (var o in outs) if (Directory.Exists(o)) Directory.Delete(o, true);
        }
    }

    [Fact]
    public void Without_the_layer_norm_the_penultimate_layer_is_the_stock_conditioning()
    {
        var dir = RandomSdxl();
        try
        {
            using var pipe = (StableDiffusionXLPipeline)LensPipeline.Load(dir, "cpu", "float32");
            Assert.Equal(3, pipe.NumLayers);
            pipe.LensLayerNorm = false;
            using var scope = NewDisposeScope();
            using var prompt = pipe.EncodeLayers("a cat on a mat");
            var lensed = pipe.LensEmbedding(prompt, LayerNumbering.Lens, pipe.NumLayers - 1);

            var ids2 = torch.tensor(pipe.Tokenizer2.Encode("a cat on a mat").InputIds).unsqueeze(0);
            using var o2 = pipe.Clip2.Encode(ids2);
            var ids1 = torch.tensor(pipe.Tokenizer1.Encode("").InputIds).unsqueeze(0);
            using var o1 = pipe.Clip.Encode(ids1);
            var stock = PooledConditioning.Pack(torch.cat(new[] { o1.Hidden[^2], o2.Hidden[^2] }, -1), pipe.Clip2.Pooled(o2.LastHiddenState, ids2));
            Assert.True(torch.allclose(lensed, stock, rtol: 1e-5, atol: 1e-6), "lens layer N-2 without the norm is not the stock conditioning");

            pipe.LensLayerNorm = true;
            var normed = pipe.LensEmbedding(prompt, LayerNumbering.Lens, pipe.NumLayers - 1);
            Assert.False(torch.allclose(normed, stock, rtol: 1e-3, atol: 1e-4), "the layer norm changed nothing");
        }
        finally { Directory.Delete(dir, true); }
    }
}
