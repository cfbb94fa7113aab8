using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The tiny SDXL pipeline fixtures/models/sdxl-tiny against real diffusers under the nnsight Diffusion Lens tutorial's
/// SDXL intervention (text_encoder fed the empty prompt; text_encoder_2's penultimate output replaced by
/// final_layer_norm(layer L) ("ln") or the raw layer output ("raw"); layers 0..N-2). Reference:
/// fixtures/references-sdxl/sdxl-tiny/, made by <c>python3 fixtures/make_reference.py sdxl</c> (CPU float32, forward
/// hooks mirroring the tutorial; what the UNet received at its first call). Tolerances as the other CPU float32
/// references (Sd2ParityTests): token ids, timesteps and time ids exactly, zero negative conditioning exactly;
/// embeddings by <see cref="ReferenceData.AssertMatches"/> (rel L2 1e-5, max |diff| 1e-4 x max(1, max|ref|), per token
/// too); final latents rel L2 1e-4 and max |diff| 1e-3 x max(1, max|ref|); sweep images at most 2 8-bit levels.
/// (The recorded first steps' latents are for diagnosis; the final latents check the whole trajectory.)
/// </summary>
[Collection("pipelines")]
public class SdxlParityTests(ITestOutputHelper output)
{
    private const double LatentRelTol = 1e-4;
    private const double LatentAbsTol = 1e-3;
    private const int ImageLevels = 2;

    private static string Folder => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-sdxl", "sdxl-tiny");
    private const string Recording = "run `python3 fixtures/make_reference.py sdxl` with real diffusers (CPU float32) and commit fixtures/models/sdxl-tiny and fixtures/references-sdxl/";

    private static ReferenceData OpenOrSkip()
    {
        var r = ReferenceData.OpenRecordedOrSkip(Folder, Recording);
        r.SkipIfUnavailable();
        return r;
    }

    public static TheoryData<string> Variants() => new() { "ln", "raw" };

    private static int[] LensLayers(ReferenceData r) => r.Json["lens_layers"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    [Fact]
    public void Tokens_timesteps_time_ids_and_negative_conditioning_match_diffusers()
    {
        using var r = OpenOrSkip();
        using var pipe = (StableDiffusionXLPipeline)LensPipeline.Load(r.ModelPath!, "cpu", "float32");
        Assert.Equal("sdxl", r.Kind);
        Assert.Equal(r.Json["force_zeros_for_empty_prompt"]!.GetValue<bool>(), pipe.ForceZerosForEmptyPrompt);
        Assert.Equal(r.Json["num_hidden_layers_2"]!.GetValue<int>() - 1, pipe.NumLayers);
        Assert.Equal(r.ReadLongs("input_ids_2"), pipe.Tokenizer2.Encode(r.Prompt).InputIds);
        Assert.Equal(r.ReadLongs("empty_input_ids_1"), pipe.Tokenizer1.Encode("").InputIds);
        using (var s = pipe.CreateScheduler())
        {
            s.SetTimesteps(r.Steps);
            using var t = r.Read("timesteps");
            Assert.Equal(t.to(ScalarType.Float64).data<double>().ToArray(), s.TimestepValues);
            SchedulerParityTests.CheckEffectiveConfig(s, r.Json["scheduler_config"]!.AsObject(), pipe.SchedulerConfig.Root);
        }
        // diffusers' add_time_ids: original size + crop (0, 0) + target size, every row
        using (var ids = r.Read("time_ids"))
            foreach (var row in ids.to(ScalarType.Float64).data<double>().Chunk(6))
                Assert.Equal(new double[] { r.Height, r.Width, 0, 0, r.Height, r.Width }, row);

        // an empty negative prompt: zeros (force_zeros_for_empty_prompt), exactly
        using (var zero = pipe.Unconditional("", null))
        {
            var (p, q) = PooledConditioning.Unpack(zero, pipe.PromptDim);
            using var ep = r.Read("negative_zero.prompt_embeds");
            using var eq = r.Read("negative_zero.pooled");
            Assert.True(ReferenceData.Identical(p, ep) && ReferenceData.Identical(q, eq), "the empty negative prompt's conditioning is not diffusers' zeros");
        }
        // a non-empty one: both encoders, penultimate states concatenated, text_encoder_2's pooled embeddings
        using (var neg = pipe.Unconditional(r.Json["negative_prompt_recorded"]!.GetValue<string>(), null))
        {
            var (p, q) = PooledConditioning.Unpack(neg, pipe.PromptDim);
            r.AssertMatches("negative.prompt_embeds", p, output, rowDim: 1);
            r.AssertMatches("negative.pooled", q, output);
        }
    }

    [Theory, MemberData(nameof(Variants))]
    public void Lens_conditioning_and_final_latents_match_diffusers(string variant)
    {
        using var r = OpenOrSkip();
        using var pipe = (StableDiffusionXLPipeline)LensPipeline.Load(r.ModelPath!, "cpu", "float32");
        pipe.LensLayerNorm = r.Json["variants"]![variant]!.GetValue<bool>();
        using var prompt = pipe.EncodeLayers(r.Prompt);
        using var uncond = pipe.Unconditional("", null);
        var gen = new GenerationOptions(r.Seed, r.Steps, r.Guidance, r.Height, r.Width);
        foreach (var l in LensLayers(r))
        {
            using var scope = NewDisposeScope();
            var cond = pipe.LensEmbedding(prompt, LayerNumbering.Lens, l);
            var (p, q) = PooledConditioning.Unpack(cond, pipe.PromptDim);
            r.AssertMatches($"{variant}.{l}.prompt_embeds", p, output, rowDim: 1);
            r.AssertMatches($"{variant}.{l}.pooled", q, output);
            using var g = new Generator((ulong)r.Seed);
            var latents = pipe.GenerateSamples([cond], uncond, gen, [g]);
            using var expected = r.Read($"{variant}.{l}.final_latents");
            var (maxAbs, refMax, rel) = ReferenceData.Compare(latents, expected);
            output.WriteLine($"{variant} layer {l} final latents: rel L2 {rel:E2}, max |diff| {maxAbs:E2}");
            Assert.True(rel <= LatentRelTol && maxAbs <= LatentAbsTol * Math.Max(1, refMax),
                $"{variant} layer {l}: final latents rel L2 {rel:E2}, max |diff| {maxAbs:E2} (ref max {refMax:E2}) over tolerance");
        }
    }

    [Theory, MemberData(nameof(Variants))]
    public void Sweep_images_match_diffusers(string variant)
    {
        using var r = OpenOrSkip();
        var layers = LensLayers(r);
        foreach (int batch in new[] { 1, layers.Length })
        {
            var outDir = CliRunner.TempPath($"sdxl-{variant}-b{batch}");
            try
            {
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = r.ModelPath!, Prompt = r.Prompt, Seed = r.Seed, Steps = r.Steps, Guidance = r.Guidance,
                    Height = r.Height, Width = r.Width, OutDir = outDir, Layers = "all", Batch = batch,
                    LensLayerNorm = r.Json["variants"]![variant]!.GetValue<bool>(),
                });
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal("StableDiffusionXLPipeline", m["pipeline"]!.GetValue<string>());
                Assert.Equal(layers, res.Layers);
                foreach (var l in layers)
                {
                    using var expected = r.Read($"{variant}.{l}.image");
                    var a = RgbImage.Load(res.LayerImages[l]);
                    var e = RgbImage.FromUnitHwc(expected);
                    Assert.Equal((e.Width, e.Height), (a.Width, a.Height));
                    int max = a.Pixels.Zip(e.Pixels, (x, y) => Math.Abs(x - y)).Max();
                    output.WriteLine($"{variant} batch {batch} layer {l}: 8-bit max diff {max}");
                    Assert.True(max <= ImageLevels, $"{variant} layer {l} (batch {batch}): {max} levels from diffusers' image (tolerance {ImageLevels})");
                }
            }
            finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
        }
    }
}
