using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Whole-pipeline parity with real diffusers, data-driven over every fixtures/references/*/reference.json:
/// token ids, every layer's hidden state and lens embedding, timesteps, initial noise, and the image of every lens
/// layer and of the stock pipeline. Expected values were produced by fixtures/make_reference.py (diffusers 0.40,
/// transformers 5.17, torch 2.11, float32 on CPU). A reference whose model is not on this machine is skipped.
/// </summary>
[Collection("pipelines")]
public class PipelineParityTests
{
    private readonly ITestOutputHelper _out;
    public PipelineParityTests(ITestOutputHelper output) => _out = output;

    public static TheoryData<string> References() => new(ReferenceData.All());

    private static ReferenceData OpenOrSkip(string name)
    {
        var r = ReferenceData.Open(name);
        if (r.SkipReason is string why) Assert.Skip(why);
        return r;
    }

    [Theory, MemberData(nameof(References))]
    public void TokenIdsMatchTheDiffusersPipeline(string name)
    {
        using var r = OpenOrSkip(name);
        var tok = PromptTokenizer.Load(r.ModelPath!);
        var (ids, mask, text) = tok.Tokenize(r.Prompt, r.CleanCaption);
        Assert.Equal(r.ReadLongs("input_ids"), ids);
        var (nids, nmask, _) = tok.Tokenize(r.NegativePrompt, r.CleanCaption);
        Assert.Equal(r.ReadLongs("negative_input_ids"), nids);
        if (r.Has("attention_mask"))
        {
            Assert.Equal(r.ReadLongs("attention_mask"), mask);
            Assert.Equal(r.ReadLongs("negative_attention_mask"), nmask);
            Assert.Equal(r.Json["preprocessed_prompt"]!.GetValue<string>(), text);
        }
    }

    /// <summary>
    /// Tolerance (float32 on CPU): relative L2 error 1e-5 and max |diff| 1e-4 x max(1, max|ref|) per layer (CUDA float32:
    /// 1e-4 / 1e-3); float16 references: the error-ratio criterion against the float32 truth (LowPrecisionTruth).
    /// </summary>
    [Theory, MemberData(nameof(References))]
    public void EveryLayerHiddenStateAndLensEmbeddingMatch(string name)
    {
        using var r = OpenOrSkip(name);
        using var pipe = LensPipeline.Load(r.ModelPath!, r.Device, r.DType, r.Variant);
        using var layers = pipe.EncodeLayers(r.Prompt, r.CleanCaption);
        Assert.Equal(r.NumLayers, layers.Hidden.Count);
        Assert.Equal(r.NumLayers, pipe.NumLayers);
        _out.WriteLine(r.RanOn);
        double worst = 0;
        for (int l = 0; l < r.NumLayers; l++)
        {
            using var scope = NewDisposeScope();
            // per token too (float32): an error in one token must not hide in the whole tensor's norm
            worst = Math.Max(worst, r.AssertMatches($"hidden.{l}", layers.Hidden[l], rowDim: 1));
            worst = Math.Max(worst, r.AssertMatches($"lens.{l}", pipe.Lens(layers.Hidden[l]), rowDim: 1));
        }
        using var neg = pipe.EncodeLayers(r.NegativePrompt, r.CleanCaption);
        using var negEmbeds = pipe.Lens(neg.Hidden[^1]);
        r.AssertMatches("negative_embeds", negEmbeds, _out, rowDim: 1);
        // the last layer's lens IS the stock prompt embedding, bit for bit (diffusers recorded torch.equal as true)
        using var stock = pipe.EncodeStock(r.Prompt, r.CleanCaption);
        using var lastLens = pipe.Lens(layers.Hidden[^1]);
        Assert.True(r.Json["lens_last_equals_stock_embeds"]!.GetValue<bool>(), $"{name}: the reference says diffusers' last-layer lens differs from its stock embedding");
        Assert.True(ReferenceData.Identical(lastLens, stock), $"{name}: the last layer's lens embedding is not bit-identical to the stock prompt embedding");
        r.AssertMatches("stock_embeds", stock, _out, rowDim: 1);
        _out.WriteLine($"{name}: worst per-layer rel L2 {worst:E2} over {r.NumLayers} layers");
    }

    /// <summary>
    /// Every lens layer's image and the stock image against diffusers' float images. Tolerance: at most
    /// r.Tol.ImageLevels 8-bit levels on any pixel (float32 CPU: differences come only from kernel rounding).
    /// </summary>
    [Theory, MemberData(nameof(References))]
    public void EveryLayerImageAndTheStockImageMatch(string name)
    {
        using var r = OpenOrSkip(name);
        using var pipe = LensPipeline.Load(r.ModelPath!, r.Device, r.DType, r.Variant);
        var gen = new GenerationOptions(r.Seed, r.Steps, r.Guidance, r.Height, r.Width);
        using var layers = pipe.EncodeLayers(r.Prompt, r.CleanCaption);
        using var neg = pipe.EncodeLayers(r.NegativePrompt, r.CleanCaption);
        using var uncond = pipe.Lens(neg.Hidden[^1]);
        _out.WriteLine(r.RanOn);
        int calls = 0;
        using var stockEmbeds = pipe.EncodeStock(r.Prompt, r.CleanCaption);
        using var stock = pipe.Generate(new[] { stockEmbeds }, uncond, gen, (_, of) => calls = of);
        Assert.Equal(r.Json["unet_calls"]!.GetValue<int>(), calls);
        AssertImage(r, "stock", "stock.image", stock[0]);
        foreach (var l in r.Layers)
        {
            using var scope = NewDisposeScope();
            var img = pipe.Generate(new[] { pipe.Lens(layers.Hidden[l]) }, uncond, gen);
            AssertImage(r, $"layer {l}", $"layer.{l}.image", img[0]);
            if (l == r.NumLayers - 1)
                Assert.True(ReferenceData.Identical(img[0], stock[0]), $"{name}: the last layer's lens image must equal the stock image exactly");
        }
    }

    /// <summary>
    /// float32: at most r.Tol.ImageLevels 8-bit levels on any pixel against diffusers' image; float16: the error-ratio
    /// criterion on the float image against the float32 truth's image (the 8-bit difference is reported).
    /// </summary>
    private void AssertImage(ReferenceData r, string what, string key, Tensor actual)
    {
        using var expected = r.Read(key);
        var (maxAbs, _, rel) = ReferenceData.Compare(actual, expected);
        var a8 = RgbImage.FromUnitHwc(actual);
        var e8 = RgbImage.FromUnitHwc(expected);
        int maxLevels = a8.Pixels.Zip(e8.Pixels, (x, y) => Math.Abs(x - y)).Max();
        _out.WriteLine($"{r.Name} {what}: vs diffusers max |diff| {maxAbs:E2} ({maxAbs * 255:F3} levels), 8-bit max diff {maxLevels}, rel L2 {rel:E2}");
        if (r.IsLowPrecision) r.LowPrecision.AssertWithinCriterion(key, actual, _out);
        else Assert.True(maxLevels <= r.Tol.ImageLevels, $"{r.Name} {what}: 8-bit images differ by {maxLevels} levels (tolerance {r.Tol.ImageLevels})");
    }

    /// <summary>
    /// Per-token tolerance factor over the whole-tensor one: 1 for float32 on the CPU (measured: every token of every
    /// tiny reference within 1e-5); 4 elsewhere (a token's error is not diluted by the others).
    /// </summary>

    /// <summary>Timesteps and the initial noise as the pipeline itself makes them (its noise code, its generator).</summary>
    [Theory, MemberData(nameof(References))]
    public void TimestepsAndInitialNoiseAreDiffusersExactly(string name)
    {
        using var r = OpenOrSkip(name);
        using var pipe = LensPipeline.Load(r.ModelPath!, r.Device, r.DType, r.Variant);
        using var sched = DiffusionLens.Schedulers.Scheduler.FromConfig(pipe.SchedulerConfig);
        sched.SetTimesteps(r.Steps);
        Assert.Equal(r.ReadLongs("timesteps"), sched.Timesteps.Select(t => (long)t).ToArray());
        var key = r.Has("init_latents") ? "init_latents" : "init_images";
        using var expected = r.Read(key);
        var gen = new GenerationOptions(r.Seed, r.Steps, r.Guidance, r.Height, r.Width);
        using var noise = pipe.InitialSample(gen, sched, new Generator((ulong)r.Seed));
        using var cpu = noise.cpu();
        Assert.True(ReferenceData.Identical(cpu, expected), $"{name}: the pipeline's initial noise differs from diffusers' (CPU generator, seed {r.Seed})");
    }
}
