using DiffusionLens.Pipelines;
using DiffusionLens.Sweep;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Hidden-state numbering against transformers itself: hidden states 0 (the embedding output) and 1 (the output of
/// encoder layer 0) of the tiny models, and their lens, compared with <c>output_hidden_states=True</c>'s
/// <c>hidden_states[0]</c> / <c>[1]</c> and the model's final layer norm applied to them. References:
/// fixtures/references-numbering/&lt;model&gt;/ made by <c>fixtures/make_reference.py numbering</c> with real
/// transformers (CPU float32). Tolerance: as the main references' hidden states and lens embeddings, rel L2 at most
/// 1e-5 per token row.
/// </summary>
public class NumberingParityTests
{
    private readonly ITestOutputHelper _out;
    public NumberingParityTests(ITestOutputHelper output) => _out = output;

    public static TheoryData<string> Models() => new("sd-tiny-12", "if-tiny-a");

    [Theory, MemberData(nameof(Models))]
    public void HiddenStatesMatchTransformersHiddenStates(string model)
    {
        var folder = Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-numbering", model);
        using var r = ReferenceData.OpenRecordedOrSkip(folder, "run `python3 fixtures/make_reference.py numbering` with real transformers (CPU float32) and commit fixtures/references-numbering/");
        r.SkipIfUnavailable();
        using var enc = PromptEncoder.Load(r.ModelPath!, variant: r.Variant);
        Assert.Equal(r.Json["num_layers"]!.GetValue<int>(), enc.NumLayers);
        using var layers = enc.EncodeLayers(r.Prompt, r.CleanCaption);
        Assert.Equal(r.ReadLongs("input_ids"), layers.InputIds);
        if (r.Kind == "if") Assert.Equal(r.ReadLongs("attention_mask"), layers.AttentionMask);
        foreach (int k in new[] { 0, 1 })
        {
            using var scope = NewDisposeScope();
            var state = LayerNumbering.State(layers, LayerNumbering.HiddenState, k);
            AssertRows(r.Read($"hidden_states.{k}"), state, $"{model} hidden state {k}");
            AssertRows(r.Read($"lens.{k}"), enc.Lens(state), $"{model} lens of hidden state {k}");
            _out.WriteLine($"{model}: hidden state {k} and its lens match transformers' hidden_states[{k}]");
        }
    }

    private static void AssertRows(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        for (long t = 0; t < expected.shape[1]; t++)
        {
            var (maxAbs, _, rel) = ReferenceData.Compare(actual[0, t], expected[0, t]);
            Assert.True(rel <= 1e-5, $"{what}, token {t}: rel L2 {rel:E2} (max |diff| {maxAbs:E2})");
        }
    }
}
