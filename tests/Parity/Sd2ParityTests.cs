using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Schedulers;
using DiffusionLens.Sweep;
using DiffusionLens.Tokenizers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The tiny SD 2.x-style pipeline fixtures/models/sd2-tiny (gelu CLIP text encoder, a tokenizer padding with "!" as
/// SD 2's does, linear projections, per-block head counts, upcast attention, SD 2.1's DDIM v-prediction scheduler
/// file) against real diffusers. References: fixtures/references-sd2/&lt;ddim|dpm++|euler|pndm&gt;-&lt;reseed|continue&gt;/
/// and tokenizer.json, made by <c>python3 fixtures/make_reference.py sd2</c> (CPU float32; its full per-layer reference
/// fixtures/references/sd2-tiny/ is run by the data-driven PipelineParityTests, StepParityTests, UNet/VAE tests). Each
/// case is a lens sweep of a few layers under one scheduler (the model's DDIM, or DPM-Solver++ / Euler / PNDM built from
/// its config as <c>from_config</c>) and one seed policy. Tolerances, as the other CPU float32 references: token ids and
/// timesteps exactly; lens embeddings rel L2 1e-5 and max |diff| 1e-4 x max(1, max|ref|), per token too; images at most
/// 2 8-bit levels (as SeedPolicyTests), at batch 1 and with all layers in one batch. Final latents: rel L2 1e-4 and max
/// |diff| 1e-3 x max(1, max|ref|), ten times the per-step tolerance, since a whole trajectory's rounding accumulates
/// (StepParityTests checks each step alone at 1e-5).
/// </summary>
[Collection("pipelines")]
public class Sd2ParityTests
{
    private const double LatentRelTol = 1e-4;
    private const double LatentAbsTol = 1e-3;
    private const int ImageLevels = 2;

    private readonly ITestOutputHelper _out;
    public Sd2ParityTests(ITestOutputHelper output) => _out = output;

    public static string RefsDir => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-sd2");
    private static string ModelDir => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd2-tiny");
    private const string Recording = "run `python3 fixtures/make_reference.py sd2` with real diffusers (CPU float32) and commit fixtures/models/sd2-tiny, fixtures/references/sd2-tiny and fixtures/references-sd2/";

    /// <summary>make_reference.py's SD2_SCHEDULERS x SD2_POLICIES, as its folder names: --scheduler alias, seed policy.</summary>
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in new[] { "ddim", "dpm++", "euler", "pndm" })
            foreach (var p in new[] { "reseed", "continue" })
                data.Add(s, p);
        return data;
    }

    private static ReferenceData OpenOrSkip(string scheduler, string policy)
    {
        var folder = Path.Combine(RefsDir, $"{scheduler}-{policy}");
        var r = ReferenceData.OpenRecordedOrSkip(folder, Recording);
        r.SkipIfUnavailable();
        return r;
    }

    /// <summary>BOS, the text, EOS, then only the pad id: SD 2's "!" (its vocab id), not the EOS as in SD 1.x.</summary>
    private static void AssertPadsWithBang(long[] ids, long padId, long eosId, string what)
    {
        Assert.NotEqual(eosId, padId);
        int eos = Array.IndexOf(ids, eosId);
        Assert.True(eos > 0, $"{what}: no EOS in the ids");
        Assert.True(eos < ids.Length - 1, $"{what}: no padding after the EOS (a prompt this short must be padded)");
        Assert.All(ids[(eos + 1)..], id => Assert.Equal(padId, id));
    }

    [Theory, MemberData(nameof(Cases))]
    public void LensSweepMatchesDiffusers(string scheduler, string policy)
    {
        using var r = OpenOrSkip(scheduler, policy);
        var cls = Scheduler.ResolveClassName(scheduler);
        Assert.Equal(cls, r.Json["scheduler"]!.GetValue<string>());
        Assert.Equal(policy, r.Json["seed_policy"]!.GetValue<string>());
        int[] layers = r.Layers;

        // token ids: the C# tokenizer pads with "!" as transformers did
        long padId = r.Json["pad_token_id"]!.GetValue<long>(), eosId = r.Json["eos_token_id"]!.GetValue<long>();
        Assert.Equal("!", r.Json["pad_token"]!.GetValue<string>());
        var tok = PromptTokenizer.Load(r.ModelPath!);
        var ids = tok.Tokenize(r.Prompt).Ids;
        Assert.Equal(r.ReadLongs("input_ids"), ids);
        AssertPadsWithBang(ids, padId, eosId, "prompt");
        Assert.Equal(r.ReadLongs("negative_input_ids"), tok.Tokenize(r.NegativePrompt).Ids);

        using var pipe = LensPipeline.Load(r.ModelPath!, "cpu", "float32", r.Variant, cls);
        // timesteps exactly (float32 values for Euler), and the effective scheduler config
        using (var s = pipe.CreateScheduler())
        {
            s.SetTimesteps(r.Steps);
            using var t = r.Read("timesteps");
            Assert.Equal(t.to(ScalarType.Float64).data<double>().ToArray(), s.TimestepValues);
            SchedulerParityTests.CheckEffectiveConfig(s, r.Json["scheduler_config"]!.AsObject(), pipe.SchedulerConfig.Root);
        }

        // each layer's lens embedding and final latents, the generator reseeded or carried from layer to layer
        using var hidden = pipe.EncodeLayers(r.Prompt);
        using var neg = pipe.EncodeLayers(r.NegativePrompt);
        using var uncond = pipe.Lens(neg.Hidden[^1]);
        r.AssertMatches("negative_embeds", uncond, _out, rowDim: 1);
        var gen = new GenerationOptions(r.Seed, r.Steps, r.Guidance, r.Height, r.Width);
        using var carried = new Generator((ulong)r.Seed);
        foreach (var l in layers)
        {
            using var scope = NewDisposeScope();
            var lens = pipe.Lens(hidden.Hidden[l]);
            r.AssertMatches($"lens.{l}", lens, _out, rowDim: 1);
            using var own = policy == "reseed" ? new Generator((ulong)r.Seed) : null;
            var latents = pipe.GenerateSamples([lens], uncond, gen, [own ?? carried]);
            using var expected = r.Read($"layer.{l}.final_latents");
            var (maxAbs, refMax, rel) = ReferenceData.Compare(latents, expected);
            _out.WriteLine($"{cls} {policy} layer {l} final latents: rel L2 {rel:E2}, max |diff| {maxAbs:E2}");
            Assert.True(rel <= LatentRelTol && maxAbs <= LatentAbsTol * Math.Max(1, refMax),
                $"{cls} {policy} layer {l}: final latents rel L2 {rel:E2}, max |diff| {maxAbs:E2} (ref max {refMax:E2}) over tolerance (rel {LatentRelTol:E0}, abs {LatentAbsTol:E0} x max(1, ref max))");
        }

        // the sweep itself (--scheduler, --seed-policy), one layer per batch and all layers in one batch
        foreach (int batch in new[] { 1, layers.Length })
        {
            var outDir = CliRunner.TempPath($"sd2-{scheduler}-{policy}-b{batch}");
            try
            {
                var res = LensSweep.Run(new SweepOptions
                {
                    ModelDir = r.ModelPath!, Prompt = r.Prompt, NegativePrompt = r.NegativePrompt, Seed = r.Seed,
                    Steps = r.Steps, Guidance = r.Guidance, Height = r.Height, Width = r.Width, OutDir = outDir,
                    Layers = string.Join(",", layers), Scheduler = scheduler, SeedPolicy = policy, Batch = batch,
                });
                var m = JsonNode.Parse(File.ReadAllText(res.ManifestPath))!;
                Assert.Equal(cls, m["scheduler"]!.GetValue<string>());
                Assert.Equal(policy, m["seed_policy"]!.GetValue<string>());
                foreach (var l in layers)
                {
                    using var expected = r.Read($"layer.{l}.image");
                    var a = RgbImage.Load(res.LayerImages[l]);
                    var e = RgbImage.FromUnitHwc(expected);
                    Assert.Equal((e.Width, e.Height), (a.Width, a.Height));
                    int max = a.Pixels.Zip(e.Pixels, (x, y) => Math.Abs(x - y)).Max();
                    _out.WriteLine($"{cls} {policy} batch {batch} layer {l}: 8-bit max diff {max}");
                    Assert.True(max <= ImageLevels, $"{cls} {policy} layer {l} (batch {batch}): {max} levels from diffusers' image (tolerance {ImageLevels})");
                }
            }
            finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
        }
    }

    /// <summary>The sd2-tiny tokenizer's ids for many prompts (those of fixtures/tokenizers/clip.json and some with "!"),
    /// exactly as transformers' CLIPTokenizer gave them from the same files.</summary>
    [Fact]
    public void TokenizerIdsMatchTransformers()
    {
        var file = Path.Combine(RefsDir, "tokenizer.json");
        if (!File.Exists(file)) Assert.Skip($"{file} is not recorded yet: {Recording}");
        var j = JsonNode.Parse(File.ReadAllText(file))!;
        var tok = ClipTokenizer.FromFolder(Path.Combine(ReferenceData.RepoRoot, j["model"]!.GetValue<string>(), "tokenizer"));
        Assert.Equal(j["pad_token"]!.GetValue<string>(), tok.PadToken);
        Assert.Equal(j["pad_token_id"]!.GetValue<long>(), tok.PadTokenId);
        Assert.Equal(j["eos_token_id"]!.GetValue<long>(), tok.EosTokenId);
        var wrong = new List<string>();
        foreach (var c in j["cases"]!.AsArray())
        {
            var prompt = c!["prompt"]!.GetValue<string>();
            var (ids, mask) = tok.Encode(prompt);
            if (!ids.SequenceEqual(c["input_ids"]!.AsArray().Select(x => x!.GetValue<long>()))
                || !mask.SequenceEqual(c["attention_mask"]!.AsArray().Select(x => x!.GetValue<long>())))
                wrong.Add($"\"{prompt}\": [{string.Join(",", ids)}] vs transformers [{string.Join(",", c["input_ids"]!.AsArray())}]");
        }
        Assert.True(wrong.Count == 0, $"{wrong.Count} prompts tokenized differently:\n{string.Join("\n", wrong)}");
    }

    /// <summary>
    /// The C# loader reads the sd2-tiny configs as SD 2.x's: gelu, the UNet's per-block head counts and upcast attention,
    /// linear projections (Linear proj_in/proj_out; the strict loader has already matched every weight's shape), the
    /// default size from sample_size and the VAE, DDIM with v_prediction (and v_prediction in every scheduler built from
    /// it), and the tokenizer's "!" pad token.
    /// </summary>
    [Fact]
    public void Sd2TinyConfigsAreReadAsSd2()
    {
        if (!File.Exists(Path.Combine(ModelDir, "model_index.json")))
            Assert.Skip($"{ModelDir} is not built yet: {Recording}");
        JsonNode Config(string component) => JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir, component, "config.json")))!;
        var te = Config("text_encoder");
        var unet = Config("unet");
        using var pipe = Assert.IsType<StableDiffusionPipeline>(LensPipeline.Load(ModelDir), exactMatch: false);

        Assert.Equal("gelu", pipe.Clip.Config.HiddenAct);
        Assert.Equal(te["num_hidden_layers"]!.GetValue<int>(), pipe.NumLayers);

        // attention_head_dim is SD 2's per-block head count: block i's attention (width block_out_channels[i]) has that many heads
        var widths = unet["block_out_channels"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var heads = unet["attention_head_dim"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        Assert.True(unet["use_linear_projection"]!.GetValue<bool>() && unet["upcast_attention"]!.GetValue<bool>());
        var attentions = pipe.UNet.modules().OfType<Attention>().ToList();
        Assert.NotEmpty(attentions);
        foreach (var a in attentions)
        {
            Assert.True(a.UpcastAttention, "every UNet attention upcasts (upcast_attention: true)");
            Assert.Equal(heads[Array.IndexOf(widths, a.QueryDim)], a.Heads);
        }
        var projections = pipe.UNet.named_modules().Where(m => m.name.EndsWith(".proj_in") || m.name.EndsWith(".proj_out")).ToList();
        Assert.NotEmpty(projections);
        Assert.All(projections, m => Assert.IsType<DiffusionLens.Models.Linear>(m.module));

        int scale = 1 << (Config("vae")["block_out_channels"]!.AsArray().Count - 1);
        Assert.Equal(unet["sample_size"]!.GetValue<int>() * scale, pipe.Defaults.Height);

        Assert.Equal("DDIMScheduler", pipe.SchedulerName);
        foreach (var cls in new[] { "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "PNDMScheduler" })
        {
            using var s = Scheduler.FromConfig(pipe.SchedulerConfig, cls);
            var prediction = s switch
            {
                DDIMScheduler d => d.PredictionType,
                DPMSolverMultistepScheduler d => d.PredictionType,
                EulerDiscreteScheduler e => e.PredictionType,
                PNDMScheduler p => p.PredictionType,
                _ => throw new InvalidOperationException(s.ClassName),
            };
            Assert.Equal("v_prediction", prediction);
        }

        var tok = ClipTokenizer.FromFolder(Path.Combine(ModelDir, "tokenizer"));
        var vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir, "tokenizer", "vocab.json")))!;
        Assert.Equal("!", tok.PadToken);
        Assert.Equal(vocab["!"]!.GetValue<int>(), tok.PadTokenId);
        AssertPadsWithBang(tok.Encode("a photo of a cat").InputIds, tok.PadTokenId, tok.EosTokenId, "a photo of a cat");
    }
}
