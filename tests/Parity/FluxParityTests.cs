using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The tiny FLUX pipeline fixtures/models/flux-tiny against real diffusers under the nnsight Diffusion Lens tutorial's
/// FLUX intervention (text_encoder fed the empty prompt; the input of T5's final_layer_norm replaced by block L's
/// output; every T5 layer) at 1 step (the tutorial's) and 4 steps, guidance 0. Reference:
/// fixtures/references-flux/flux-tiny/, made by <c>python3 fixtures/make_reference.py flux</c> (CPU float32, forward
/// hooks; what the transformer received at its first call and what it returned). Tolerances as the other CPU float32
/// references: token ids, timesteps, sigmas and position ids exactly; the initial packed latents exactly (the same CPU
/// generator draw); embeddings and the first prediction by <see cref="ReferenceData.AssertMatches"/> (rel L2 1e-5,
/// max |diff| 1e-4 x max(1, max|ref|), per token too); final latents rel L2 1e-4 and max |diff| 1e-3 x max(1,
/// max|ref|); sweep images at most 2 8-bit levels.
/// </summary>
[Collection("pipelines")]
public class FluxParityTests(ITestOutputHelper output)
{
    private const double LatentRelTol = 1e-4;
    private const double LatentAbsTol = 1e-3;
    private const int ImageLevels = 2;

    private static string Folder => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-flux", "flux-tiny");
    private const string Recording = "run `python3 fixtures/make_reference.py flux` with real diffusers (CPU float32) and commit fixtures/models/flux-tiny and fixtures/references-flux/";

    private static ReferenceData OpenOrSkip()
    {
        var r = ReferenceData.OpenRecordedOrSkip(Folder, Recording);
        r.SkipIfUnavailable();
        return r;
    }

    private static FluxPipeline Load(ReferenceData r)
    {
        var pipe = (FluxPipeline)LensPipeline.Load(r.ModelPath!, "cpu", "float32");
        pipe.MaxSequenceLength = r.Json["max_sequence_length"]!.GetValue<int>();
        return pipe;
    }

    private static int[] LensLayers(ReferenceData r) => r.Json["lens_layers"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    private static IEnumerable<(string Key, GenerationOptions Options)> Runs(ReferenceData r, long seedOverride = -1) =>
        r.Json["runs"]!.AsArray().Select(n => (n!["key"]!.GetValue<string>(), new GenerationOptions(
            seedOverride >= 0 ? seedOverride : n["seed"]!.GetValue<long>(), n["steps"]!.GetValue<int>(), n["guidance"]!.GetValue<double>(),
            n["height"]!.GetValue<int>(), n["width"]!.GetValue<int>())));

    [Fact]
    public void Tokens_schedules_ids_and_initial_latents_match_diffusers()
    {
        using var r = OpenOrSkip();
        using var pipe = Load(r);
        Assert.Equal("flux", r.Kind);
        Assert.Equal(r.Json["num_layers"]!.GetValue<int>(), pipe.NumLayers);
        using (var prompt = pipe.EncodeLayers(r.Prompt))
            Assert.Equal(r.ReadLongs("input_ids_2"), prompt.InputIds);
        Assert.Equal(r.ReadLongs("empty_input_ids_1"), pipe.ClipTokenizer.Encode("", pipe.ClipTokenizer.ModelMaxLength).InputIds);
        using (var txt = r.Read("txt_ids"))
            Assert.True(ReferenceData.Identical(torch.zeros(txt.shape, dtype: txt.dtype), txt), "text ids are not zeros");
        foreach (var (key, o) in Runs(r))
        {
            using var scope = NewDisposeScope();
            using var s = (FlowMatchEulerDiscreteScheduler)pipe.CreateScheduler();
            var shape = new long[] { 1, pipe.LatentChannels, o.Height / pipe.VaeScaleFactor, o.Width / pipe.VaeScaleFactor };
            s.SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(o.Steps), s.CalculateShift(shape[2] / 2 * (shape[3] / 2)));
            Assert.Equal(r.Read($"{key}.timesteps").to(ScalarType.Float64).data<double>().ToArray(), s.TimestepValues);
            Assert.True(ReferenceData.Identical(s.Sigmas, r.Read($"{key}.sigmas")), $"{key}: sigmas differ from diffusers'");
            SchedulerParityTests.CheckEffectiveConfig(s, r.Json["scheduler_config"]!.AsObject(), pipe.SchedulerConfig.Root);
            // the first transformer call's timestep: t / 1000 in the latents' dtype
            var t = torch.tensor(s.TimestepValues[0], dtype: ScalarType.Float32).expand(1) / 1000;
            Assert.True(ReferenceData.Identical(t, r.Read($"{key}.timestep")), $"{key}: the transformer's timestep differs");
            // initial latents: randn of the unpacked shape from the seeded CPU generator, then packed
            using var g = new Generator((ulong)o.Seed);
            var packed = FluxPipeline.Pack(torch.randn(shape, generator: g));
            Assert.True(ReferenceData.Identical(packed, r.Read($"{key}.initial_latents")), $"{key}: initial packed latents differ");
            Assert.True(ReferenceData.Identical(FluxPipeline.LatentImageIds(shape[2] / 2, shape[3] / 2, ScalarType.Float32, torch.CPU), r.Read($"{key}.img_ids")),
                $"{key}: latent image ids differ");
        }
    }

    [Fact]
    public void Lens_embeddings_first_prediction_and_final_latents_match_diffusers()
    {
        using var r = OpenOrSkip();
        using var pipe = Load(r);
        using var prompt = pipe.EncodeLayers(r.Prompt);
        using var uncond = pipe.Unconditional("", null);
        foreach (var l in LensLayers(r))
        {
            using var scope = NewDisposeScope();
            var cond = pipe.LensEmbedding(prompt, LayerNumbering.Lens, l);
            var (p, q) = PooledConditioning.Unpack(cond, pipe.Transformer.JointAttentionDim);
            r.AssertMatches($"lens.{l}", p, output, rowDim: 1);
            r.AssertMatches("pooled", q, output);
            foreach (var (key, o) in Runs(r))
            {
                // the first step's prediction on diffusers' own initial latents and conditioning
                using (var s = pipe.CreateScheduler())
                {
                    var shape = new long[] { 1, pipe.LatentChannels, o.Height / pipe.VaeScaleFactor, o.Width / pipe.VaeScaleFactor };
                    ((FlowMatchEulerDiscreteScheduler)s).SetSigmas(FlowMatchEulerDiscreteScheduler.PipelineSigmas(o.Steps),
                        ((FlowMatchEulerDiscreteScheduler)s).CalculateShift(shape[2] / 2 * (shape[3] / 2)));
                    var latents = FluxPipeline.Unpack(r.Read($"{key}.initial_latents"), shape[2], shape[3]);
                    var pred = pipe.GuidedPrediction(s, latents, s.Timesteps[0], cond, o.Guidance);
                    r.AssertMatches($"{key}.{l}.prediction", FluxPipeline.Pack(pred), output, rowDim: 1);
                }
                using var g = new Generator((ulong)o.Seed);
                var final = FluxPipeline.Pack(pipe.GenerateSamples([cond], uncond, o, [g]));
                using var expected = r.Read($"{key}.{l}.final_latents");
                var (maxAbs, refMax, rel) = ReferenceData.Compare(final, expected);
                output.WriteLine($"{key} layer {l} final latents: rel L2 {rel:E2}, max |diff| {maxAbs:E2}");
                Assert.True(rel <= LatentRelTol && maxAbs <= LatentAbsTol * Math.Max(1, refMax),
                    $"{key} layer {l}: final latents rel L2 {rel:E2}, max |diff| {maxAbs:E2} (ref max {refMax:E2}) over tolerance");
            }
        }
    }

    [Fact]
    public void Sweep_images_match_diffusers_at_batch_one_and_all_layers()
    {
        using var r = OpenOrSkip();
        var layers = LensLayers(r);
        foreach (var (key, o) in Runs(r))
        foreach (int batch in new[] { 1, layers.Length })
        {
            var outDir = CliRunner.TempPath($"flux-{key}-b{batch}");
            try
            {
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = r.ModelPath!, Prompt = r.Prompt, Seed = o.Seed, Steps = o.Steps, Guidance = o.Guidance,
                    Height = o.Height, Width = o.Width, OutDir = outDir, Layers = "all", Batch = batch,
                    MaxSequenceLength = r.Json["max_sequence_length"]!.GetValue<int>(),
                });
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal("FluxPipeline", m["pipeline"]!.GetValue<string>());
                Assert.Equal(layers, res.Layers);
                foreach (var l in layers)
                {
                    using var expected = r.Read($"{key}.{l}.image");
                    var a = RgbImage.Load(res.LayerImages[l]);
                    var e = RgbImage.FromUnitHwc(expected);
                    Assert.Equal((e.Width, e.Height), (a.Width, a.Height));
                    int max = a.Pixels.Zip(e.Pixels, (x, y) => Math.Abs(x - y)).Max();
                    output.WriteLine($"{key} batch {batch} layer {l}: 8-bit max diff {max}");
                    Assert.True(max <= ImageLevels, $"{key} layer {l} (batch {batch}): {max} levels from diffusers' image (tolerance {ImageLevels})");
                }
            }
            finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
        }
    }
}
