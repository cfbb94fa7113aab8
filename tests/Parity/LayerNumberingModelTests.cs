using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using DiffusionLens.TextEncoders;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Hidden-state numbering on the embedded tiny models (CPU float32): hidden state k = L + 1 renders exactly lens layer
/// L (bit-identical embedding and image, same seed), and hidden state 0 is the embedding output through the final norm,
/// checked against the embedding recomputed here from the loaded module's own weights (CLIP: token_embedding(ids) +
/// position_embedding(0..T-1), then LayerNorm; T5: embed_tokens(ids), then T5's RMS norm). Tolerance of the
/// recomputation: max |diff| at most 1e-6 (the same float32 operations, possibly other kernels).
/// </summary>
[Collection("pipelines")]
public class LayerNumberingModelTests
{
    private const string Prompt = "A few people are in the ocean splashing around";
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);
    private static string? VariantOf(string name) => name == "if-tiny-a" ? "fp16" : null;

    public static TheoryData<string> Models() => new("sd-tiny-12", "if-tiny-a");

    [Theory, MemberData(nameof(Models))]
    public void HiddenStateZeroIsTheFinalNormOfTheEmbeddingOutput(string model)
    {
        using var enc = PromptEncoder.Load(Model(model), variant: VariantOf(model));
        using var layers = enc.EncodeLayers(Prompt);
        using var scope = NewDisposeScope();
        var sd = ((nn.Module)enc.TextEncoder).state_dict();
        var ids = torch.tensor(layers.InputIds, dtype: ScalarType.Int64);
        Tensor embeddings, lensed;
        if (enc.TextEncoder is ClipTextModel clip)
        {
            string p = sd.ContainsKey("text_model.embeddings.token_embedding.weight") ? "text_model." : "";
            var pos = torch.arange(ids.shape[0], dtype: ScalarType.Int64);
            embeddings = (sd[p + "embeddings.token_embedding.weight"].index_select(0, ids)
                + sd[p + "embeddings.position_embedding.weight"].index_select(0, pos)).unsqueeze(0);
            long d = embeddings.shape[^1];
            lensed = nn.functional.layer_norm(embeddings, new[] { d }, sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], clip.Config.LayerNormEps);
        }
        else
        {
            var t5 = (T5EncoderModel)enc.TextEncoder;
            var table = sd.TryGetValue("encoder.embed_tokens.weight", out var own) ? own : sd["shared.weight"];
            embeddings = table.index_select(0, ids).unsqueeze(0);
            var rms = torch.rsqrt(embeddings.pow(2).mean(new long[] { -1 }, keepdim: true) + t5.Config.LayerNormEpsilon);
            lensed = sd["encoder.final_layer_norm.weight"] * (embeddings * rms);
        }
        var state = LayerNumbering.State(layers, LayerNumbering.HiddenState, 0);
        Assert.Same(layers.Embeddings, state);
        AssertClose(embeddings, state, 1e-6, $"{model} hidden state 0 (embedding output)");
        AssertClose(lensed, enc.Lens(state), 1e-6, $"{model} lens of hidden state 0");
        // the embedding output is not any layer's output
        foreach (var h in layers.Hidden) Assert.False(torch.allclose(h, state, 1e-3, 1e-3));
    }

    [Theory, MemberData(nameof(Models))]
    public void HiddenStateLPlusOneIsLensLayerL(string model)
    {
        using var enc = PromptEncoder.Load(Model(model), variant: VariantOf(model));
        using var a = enc.EncodeLayers(Prompt);
        using var b = enc.EncodeLayers(Prompt);
        for (int l = 0; l < enc.NumLayers; l++)
        {
            using var lens = enc.Lens(LayerNumbering.State(a, LayerNumbering.Lens, l));
            using var hidden = enc.Lens(LayerNumbering.State(b, LayerNumbering.HiddenState, l + 1));
            Assert.True(ReferenceData.Identical(lens, hidden), $"{model}: hidden state {l + 1} differs from lens layer {l}");
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void HiddenStateSweepRendersLensLayerImagesBitIdentically(string model)
    {
        var lensDir = CliRunner.TempPath("num-lens");
        var hiddenDir = CliRunner.TempPath("num-hidden");
        try
        {
            int last = model == "if-tiny-a" ? 23 : 11;
            var o = new SweepOptions { ModelDir = Model(model), Variant = VariantOf(model), Prompt = Prompt, Steps = 2, Seed = 5, OutDir = lensDir, Layers = $"0,{last}" };
            var lens = LensSweep.Run(o);
            var hidden = LensSweep.Run(o with { OutDir = hiddenDir, Layers = $"1,{last + 1}", LayerNumbering = LayerNumbering.HiddenState });
            Assert.Equal(new[] { 1, last + 1 }, hidden.Layers);
            Assert.Equal("hidden-state", hidden.LayerNumbering);
            foreach (var l in lens.Layers)
            {
                Assert.Equal($"hidden-{l + 1:D2}.png", Path.GetFileName(hidden.LayerImages[l + 1]));
                Assert.Equal(RgbImage.Load(lens.LayerImages[l]).Pixels, RgbImage.Load(hidden.LayerImages[l + 1]).Pixels);
            }
            var m = JsonNode.Parse(File.ReadAllText(hidden.ManifestPath))!;
            Assert.Equal("hidden-state", m["layer_numbering"]!.GetValue<string>());
            Assert.Equal($"hidden-{last + 1:D2}.png", m["files"]![$"{last + 1}"]!.GetValue<string>());
            Assert.Equal("lens", JsonNode.Parse(File.ReadAllText(lens.ManifestPath))!["layer_numbering"]!.GetValue<string>());
        }
        finally
        {
            foreach (var d in new[] { lensDir, hiddenDir }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double maxAbs = (expected - actual).abs().max().item<float>();
        Assert.True(maxAbs <= tol, $"{what}: max |diff| {maxAbs:E2} > {tol:E0}");
    }
}
