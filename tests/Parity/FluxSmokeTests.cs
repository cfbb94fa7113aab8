using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The FLUX pipeline end to end on a random-weight folder written here (<see cref="FluxModel"/>; diffusers' numbers are
/// FluxParityTests'): it loads key for key, sweeps every T5 block at batch 1 and all layers in one batch with the same
/// images (CPU), records the pipeline, the lens and max_sequence_length; and the lens's own identities: the last layer
/// is the stock prompt embedding (T5's last_hidden_state) next to CLIP's pooled output of the empty prompt, the same
/// for every layer.
/// </summary>
[Collection("pipelines")]
public class FluxSmokeTests
{
    [Fact]
    public void Sweeps_every_T5_block_alike_at_any_batch()
    {
        var dir = FluxModel.Write();
        var outs = new List<string>();
        try
        {
            var images = new List<Dictionary<int, byte[]>>();
            foreach (int batch in new[] { 1, 3 })
            {
                var outDir = CliRunner.TempPath($"flux-smoke-b{batch}");
                outs.Add(outDir);
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = dir, Prompt = "penguins playing chess", Steps = 2, Height = 16, Width = 24, OutDir = outDir,
                    Batch = batch, MaxSequenceLength = 16,
                });
                Assert.Equal(new[] { 0, 1, 2 }, res.Layers);
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal("FluxPipeline", m["pipeline"]!.GetValue<string>());
                Assert.Equal("flux", m["kind"]!.GetValue<string>());
                Assert.Equal(16, m["max_sequence_length"]!.GetValue<int>());
                Assert.Equal("FlowMatchEulerDiscreteScheduler", m["scheduler"]!.GetValue<string>());
                Assert.Contains("empty prompt", m["lens"]!.GetValue<string>());
                var img = RgbImage.Load(res.LayerImages[0]);
                Assert.Equal((24, 16), (img.Width, img.Height));
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
    public void The_last_layer_is_the_stock_embedding_and_the_pooled_one_is_the_empty_prompt_s()
    {
        var dir = FluxModel.Write();
        try
        {
            using var pipe = (FluxPipeline)LensPipeline.Load(dir, "cpu", "float32");
            Assert.Equal(3, pipe.NumLayers); // T5's num_layers
            pipe.MaxSequenceLength = 12;
            using var scope = NewDisposeScope();
            using var prompt = pipe.EncodeLayers("penguins playing chess");
            Assert.Equal(12, prompt.InputIds.Length);
            var ids = torch.tensor(prompt.InputIds).unsqueeze(0);
            using var stock = pipe.T5.Encode(ids); // FluxPipeline calls T5 without an attention mask
            var pooled = pipe.Pooled("");
            var last = pipe.LensEmbedding(prompt, LayerNumbering.Lens, pipe.NumLayers - 1);
            var expected = PooledConditioning.Pack(stock.LastHiddenState, pooled);
            Assert.True(torch.allclose(last, expected, rtol: 1e-5, atol: 1e-6), "the last lens layer is not T5's last_hidden_state with the empty prompt's pooled output");
            var (_, pooled0) = PooledConditioning.Unpack(pipe.LensEmbedding(prompt, LayerNumbering.Lens, 0), pipe.Transformer.JointAttentionDim);
            Assert.True((pooled0 == pooled).all().item<bool>(), "the pooled embedding depends on the layer");
            Assert.False(torch.allclose(pooled, pipe.Pooled("penguins playing chess"), rtol: 1e-3, atol: 1e-4), "the pooled output ignores the prompt");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void A_guidance_embedding_transformer_takes_the_guidance_value()
    {
        var dir = FluxModel.Write(FluxModel.TransformerJson.Replace("\"guidance_embeds\": false", "\"guidance_embeds\": true"), FluxModel.DevSchedulerJson);
        var outs = new List<string>();
        try
        {
            var pixels = new List<byte[]>();
            foreach (double g in new[] { 1.0, 3.5 })
            {
                var outDir = CliRunner.TempPath($"flux-dev-g{g}");
                outs.Add(outDir);
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = dir, Prompt = "a cat", Steps = 2, Guidance = g, Height = 16, Width = 16, OutDir = outDir,
                    Layers = "2", MaxSequenceLength = 8,
                });
                pixels.Add(RgbImage.Load(res.LayerImages[2]).Pixels.ToArray());
            }
            Assert.NotEqual(pixels[0], pixels[1]);
        }
        finally
        {
            Directory.Delete(dir, true);
            foreach (var o in outs) if (Directory.Exists(o)) Directory.Delete(o, true);
        }
    }
}
