using System.Text.Json.Nodes;
using DiffusionLens.Models;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// --batch-invariant (issue #11: --batch auto's images identical to --batch 1's, not reached yet): inside a batch of k
/// layers a convolution or group norm is checked once per input shape against per-layer calls, and gives exactly the
/// per-layer numbers afterwards (in calls of as many layers as still agree); outside a batch, or with rows that do not split into k layers, it is one plain call.
/// The sweep records the option and what it did; on CUDA (where cuDNN's algorithm choice depends on the batch) it
/// splits some convolutions and a batched sweep stays within a level of --batch 1.
/// </summary>
[Collection("pipelines")]
public class BatchInvarianceTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    private static Models.Conv2d RandomConv(Generator g, long inC, long outC, long k, long stride, long padding) =>
        new(new TorchSharp.Modules.Parameter(torch.randn(new[] { outC, inC, k, k }, generator: g), false),
            new TorchSharp.Modules.Parameter(torch.randn(new[] { outC }, generator: g), false), stride, padding);

    /// <summary>
    /// A kernel whose numbers change above some call size (cuDNN keeps an algorithm over a range of batch sizes) runs in
    /// the largest calls of several layers that still give each layer its own call's numbers, found on pseudo-random
    /// data; a later check on real data that disagrees lowers it (here to one layer per call).
    /// </summary>
    [Fact]
    public void A_shape_that_differs_batched_runs_in_the_largest_groups_of_layers_that_agree()
    {
        using var scope = NewDisposeScope();
        var decisions = new BatchInvariance.Decisions("Test");
        int calls = 0;
        // exact up to 4 rows (two layers), off by 1e-3 above; with a marker value (> 50) also off at 4 rows
        Tensor Op(Tensor x)
        {
            calls++;
            bool exact = x.shape[0] <= 2 || (x.shape[0] <= 4 && x.abs().max().item<float>() < 50);
            return exact ? x * 3 : x * 3 + 1e-3;
        }
        var x = torch.randn(24, 5, generator: new Generator(4));
        using (BatchInvariance.Layers(12))
        {
            Assert.True(BatchInvariance.Run(x, decisions, Op).Equals(x * 3));
            var state = decisions.Single().Value;
            Assert.Equal(2, state.LayersPerCall); // 12 layers: 6, 4 and 3 per call differ, 2 agree
            Assert.True(state.Split);
            for (int i = 0; i < 8; i++) BatchInvariance.Run(x, decisions, Op).Dispose(); // the real-data checks end
            calls = 0;
            Assert.True(BatchInvariance.Run(x, decisions, Op).Equals(x * 3));
            Assert.Equal(6, calls); // six calls of two layers, not twelve

            var marked = x.clone();
            marked[5, 0] = torch.tensor(99f);
            var fresh = new BatchInvariance.Decisions("Test");
            Assert.True(BatchInvariance.Run(marked, fresh, Op).Equals(marked * 3)); // real data disagrees at 2 per call
            Assert.Equal(1, fresh.Single().Value.LayersPerCall);
            calls = 0;
            BatchInvariance.Run(marked, fresh, Op).Dispose();
            Assert.Equal(12, calls);
        }
    }

    [Fact]
    public void ConvolutionInABatchOfLayersGivesEachLayersOwnNumbersAndIsCheckedOncePerShape()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var conv = RandomConv(g, 3, 5, 3, 2, 1);
        var x = torch.randn(new long[] { 6, 3, 9, 7 }, generator: g);
        // what --batch 1 computes: each layer's two rows in their own call
        var perLayer = torch.cat(new[] { conv.forward(x[0..2]), conv.forward(x[2..4]), conv.forward(x[4..6]) }, 0);
        Assert.Equal(0, conv.Invariance.Count); // calls outside a batch of layers are never checked
        Assert.True(conv.forward(x).Equals(nn.functional.conv2d(x, conv.weight, conv.bias, new long[] { 2, 2 }, new long[] { 1, 1 })));
        using (BatchInvariance.Layers(3))
        {
            Assert.Equal(3, BatchInvariance.CurrentLayers);
            Assert.True(conv.forward(x).Equals(perLayer), "first call (checked) differs from per-layer calls");
            Assert.Equal(1, conv.Invariance.Count);
            Assert.True(conv.forward(x).Equals(perLayer), "later call differs from per-layer calls");
            Assert.Equal(1, conv.Invariance.Count); // decided once per shape
            conv.forward(torch.randn(new long[] { 6, 3, 5, 5 }, generator: g)).Dispose();
            Assert.Equal(2, conv.Invariance.Count); // another shape is checked on its own
            conv.forward(torch.randn(new long[] { 4, 3, 5, 5 }, generator: g)).Dispose(); // 4 rows are not 3 layers' rows
            Assert.Equal(2, conv.Invariance.Count);
            conv.forward(x[0..3]).Dispose(); // one row per layer (a VAE decode of one image per layer) is checked too
            Assert.Equal(3, conv.Invariance.Count);
            using (BatchInvariance.Layers(1)) Assert.Equal(1, BatchInvariance.CurrentLayers);
            Assert.Equal(3, BatchInvariance.CurrentLayers); // nested scopes restore
            long seenOnOtherThread = -1;
            var t = new Thread(() => seenOnOtherThread = BatchInvariance.CurrentLayers);
            t.Start();
            t.Join();
            Assert.Equal(0, seenOnOtherThread); // per thread: a sweep on another thread is not affected
        }
        Assert.Equal(0, BatchInvariance.CurrentLayers);
        Assert.Equal(new long[] { 1, 2, 2 }, conv.Invariance.Keys.Select(k => k.Unit).Order()); // rows per layer of each shape
    }

    [Fact]
    public void GuidedCallsRunInLayerMajorOrderInsideABatchOfLayers()
    {
        // a guided call of 3 layers is [uncond x3, cond x3] (diffusers' order); --batch 1 runs [uncond, cond]: inside a
        // batch of layers the call's rows go layer-major, so each layer's two rows are contiguous and in --batch 1's order
        using var scope = NewDisposeScope();
        var x = torch.arange(6 * 2, dtype: ScalarType.Float32).view(6, 2); // rows u0 u1 u2 c0 c1 c2
        Assert.True(BatchInvariance.ToLayerMajor(x, 2).Equals(x)); // outside a batch of layers: as is
        using (BatchInvariance.Layers(3))
        {
            var lm = BatchInvariance.ToLayerMajor(x, 2);
            Assert.Equal(new[] { 0f, 6, 2, 8, 4, 10 }, lm[.., 0].data<float>().ToArray()); // u0 c0 u1 c1 u2 c2
            Assert.True(BatchInvariance.ToBlockMajor(lm, 2).Equals(x));
            Assert.True(BatchInvariance.ToLayerMajor(x, 1).Equals(x)); // no guidance: one block
            // N = 2 images per layer: [u0 u0' u1 u1' u2 u2' c0 c0' ...] -> [u0 u0' c0 c0' u1 ...]
            var y = torch.arange(12, dtype: ScalarType.Float32);
            Assert.Equal(new[] { 0f, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11 }, BatchInvariance.ToLayerMajor(y, 2).data<float>().ToArray());
            Assert.True(BatchInvariance.ToLayerMajor(torch.zeros(4, 2), 2).shape.SequenceEqual(new long[] { 4, 2 })); // not 3 layers' rows: as is
        }
    }

    [Fact]
    public void GroupNormInABatchOfLayersGivesEachLayersOwnNumbers()
    {
        // libtorch's CPU group norm at [3, 32, 32, 32] (32 groups) gives row 0 other numbers than at [1, 32, 32, 32]
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var norm = Layers.GroupNorm(32, 32, 1e-6, true);
        var x = torch.randn(new long[] { 3, 32, 32, 32 }, generator: g);
        var perLayer = torch.cat(new[] { norm.forward(x[0..1]), norm.forward(x[1..2]), norm.forward(x[2..3]) }, 0);
        using (BatchInvariance.Layers(3))
        {
            Assert.True(norm.forward(x).Equals(perLayer));
            Assert.True(norm.forward(x).Equals(perLayer));
        }
        Assert.Single(norm.Invariance);
        Assert.True(nn.GroupNorm(32, 32, 1e-6, true).state_dict().Keys.SequenceEqual(norm.state_dict().Keys));
        Assert.True(nn.functional.group_norm(x, 32, torch.ones(32), torch.zeros(32), 1e-6).Equals(norm.forward(x))); // weight 1, bias 0, outside a batch
    }

    [Fact]
    public void ConvolutionModuleKeepsTorchsKeysAndInitialisation()
    {
        // the module that replaced nn.Conv2d keeps the state-dict names (strict loading) and PyTorch's initialisation draws
        torch.manual_seed(11);
        var reference = nn.Conv2d(4, 6, 3, padding: 1);
        torch.manual_seed(11);
        var ours = Layers.Conv2d(4, 6, 3, padding: 1);
        Assert.Equal(new[] { "weight", "bias" }, ours.state_dict().Keys.ToArray());
        Assert.True(reference.weight!.Equals(ours.weight));
        Assert.True(reference.bias!.Equals(ours.bias!));
        using var x = torch.randn(2, 4, 5, 5);
        // the same convolution (TorchSharp's module may reach another CPU kernel of libtorch: not bit for bit everywhere)
        Assert.True(reference.forward(x).allclose(ours.forward(x), 1e-5, 1e-6));
        Assert.Throws<ArgumentException>(() => new Models.Conv2d(new TorchSharp.Modules.Parameter(torch.zeros(3, 3), false), null, 1, 0));
    }

    [Fact]
    public void SweepRecordsTheOptionAndWhatItDid_OffChecksNothing()
    {
        var on = CliRunner.TempPath("inv-on");
        var off = CliRunner.TempPath("inv-off");
        var one = CliRunner.TempPath("inv-one");
        var o = new SweepOptions { ModelDir = Model("sd-tiny-b"), Prompt = "A few people are in the ocean splashing around", Steps = 2, Layers = "0,1,2", Batch = 3, OutDir = on, BatchInvariant = true };
        var ron = LensSweep.Run(o);
        var roff = LensSweep.Run(o with { OutDir = off, BatchInvariant = false });
        Assert.False(new SweepOptions { ModelDir = "m", Prompt = "p", OutDir = "o" }.BatchInvariant); // off by default
        var rone = LensSweep.Run(o with { OutDir = one, Batch = 1 });
        var mon = JsonNode.Parse(File.ReadAllText(ron.ManifestPath))!;
        Assert.True(mon["batch_invariant"]!.GetValue<bool>());
        var inv = mon["batch_invariance"]!;
        // every convolution, norm, projection and attention of the UNet and the VAE decoder ran in a batch of 3 layers
        // and was checked
        foreach (var kind in new[] { "Attention", "Conv2d", "GroupNorm", "LayerNorm", "Linear" })
        {
            Assert.True(inv["checked_shapes"]![kind]!.GetValue<int>() > 0, $"{kind}: {inv.ToJsonString()}");
            int split = inv["per_layer_shapes"]![kind]!.GetValue<int>();
            Assert.InRange(split, 0, inv["checked_shapes"]![kind]!.GetValue<int>());
            // each split shape makes 2 or 3 calls for a batch of 3 layers (3 at one layer per call)
            Assert.InRange(inv["split_shape_calls"]![kind]!.GetValue<int>(), 2 * split, 3 * split);
        }
        var moff = JsonNode.Parse(File.ReadAllText(roff.ManifestPath))!;
        Assert.False(moff["batch_invariant"]!.GetValue<bool>());
        Assert.Null(moff["batch_invariance"]);
        Assert.Null(JsonNode.Parse(File.ReadAllText(rone.ManifestPath))!["batch_invariance"]); // nothing to split at batch 1
        // the CPU's own batch-dependent kernels (group norm, small GEMMs such as the time embedding's) run per layer:
        // --batch 1's images bit for bit
        foreach (var l in rone.Layers)
            Assert.Equal(RgbImage.Load(rone.LayerImages[l]).Pixels, RgbImage.Load(ron.LayerImages[l]).Pixels);
        foreach (var d in new[] { on, off, one }) Directory.Delete(d, true);
    }

    /// <summary>
    /// Every pipeline's batched sweep with --batch-invariant on against --batch 1 on the CPU: the guided calls'
    /// layer-major order covers each pipeline's per-row inputs (SDXL's pooled embeddings and time ids, IF stage II's
    /// class labels and upscaled images), FLUX's unguided rows, DDPM's per-step noise, N images per layer. Within one 8-bit
    /// level on the CPU: after every wrapped kernel runs per layer, an element-wise CPU kernel still gives a value other
    /// last bits at another position in the batch (SIMD body against scalar tail, as far as measured: the tiny SDXL and
    /// FLUX samples or VAE images differ by at most 1.3e-6). SD, IF and IF + stage II are bit for bit on the 2-core CI
    /// machine but were 1 level off on the 16-core GPU host's CPU (the work splits over threads at other offsets). On
    /// CUDA, where element-wise kernels compute every element alike, the SD sweep is bit for bit
    /// (OnCudaABatchInvariantSweepGivesBatchOnesImagesBitForBit).
    /// </summary>
    [Theory]
    [InlineData("sd-tiny-b", null, 2, 1)]
    [InlineData("if-tiny-b", null, 1, 1)]
    [InlineData("if-tiny-b", "if2-tiny", 1, 1)]
    [InlineData("sdxl-tiny", null, 1, 1)]
    [InlineData("flux-tiny", null, 1, 1)]
    public void EveryPipelinesBatchMatchesBatchOneWhenInvariant(string model, string? stage2, int imagesPerLayer, int maxLevels)
    {
        var one = CliRunner.TempPath("inv1");
        var all = CliRunner.TempPath("invall");
        var o = new SweepOptions
        {
            ModelDir = Model(model), Prompt = "A few people are in the ocean splashing around", Steps = 2, Layers = "0:3",
            Batch = 1, BatchInvariant = true, OutDir = one, ImagesPerLayer = imagesPerLayer,
            Stage2Dir = stage2 is null ? null : Model(stage2), Stage2Steps = stage2 is null ? null : 2,
        };
        LensSweep.Run(o);
        var r3 = LensSweep.Run(o with { Batch = 3, OutDir = all });
        var names = Directory.GetFiles(one, "*.png").Select(Path.GetFileName).Where(n => n != "grid.png").Order().ToArray();
        Assert.True(names.Length >= 3 * imagesPerLayer, string.Join(",", names));
        foreach (var name in names)
        {
            var a = RgbImage.Load(Path.Combine(one, name!)).Pixels;
            int worst = a.Zip(RgbImage.Load(Path.Combine(all, name!)).Pixels, (x, y) => Math.Abs(x - y)).Max();
            Assert.True(worst <= maxLevels, $"{model}: {name} differs from --batch 1's by {worst} levels");
        }
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(r3.ManifestPath))!["batch_invariance"]);
        Directory.Delete(one, true);
        Directory.Delete(all, true);
    }

    [Fact]
    public void CliRejectsAnUnknownBatchInvariantValue()
    {
        var outDir = CliRunner.TempPath("inv-cli");
        var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-b"), "--prompt", "x", "--steps", "1", "--batch-invariant", "maybe", "--out", outDir);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--batch-invariant must be on or off (got 'maybe')", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }

    /// <summary>
    /// On CUDA (float16, the tiny SD model): with --batch-invariant on, all layers in one batch split the convolutions
    /// whose cuDNN algorithm changes with the batch (some do on an H200) and give --batch 1's images bit for bit.
    /// Skipped without CUDA.
    /// </summary>
    [Fact]
    public void OnCudaABatchInvariantSweepGivesBatchOnesImagesBitForBit()
    {
        bool cuda;
        try { cuda = torch.cuda.is_available(); } catch (Exception) { cuda = false; }
        if (!cuda) Assert.Skip("needs CUDA: cuDNN's batch-dependent algorithm choice is what --batch-invariant guards against");
        var one = CliRunner.TempPath("cuda-b1");
        var all = CliRunner.TempPath("cuda-ball");
        var o = new SweepOptions { ModelDir = Model("sd-tiny-12"), Prompt = "A few people are in the ocean splashing around", Steps = 4, Device = "cuda", DType = "float16", Batch = 1, OutDir = one, BatchInvariant = true };
        var r1 = LensSweep.Run(o);
        var ra = LensSweep.Run(o with { OutDir = all, Batch = 1, AutoBatch = true });
        var m = JsonNode.Parse(File.ReadAllText(ra.ManifestPath))!;
        Assert.Equal(r1.Layers.Length, m["batch"]!.GetValue<int>());
        var inv = m["batch_invariance"]!;
        Assert.True(inv["checked_shapes"]!["Conv2d"]!.GetValue<int>() > 0, inv.ToJsonString());
        foreach (var l in r1.Layers)
        {
            var a = RgbImage.Load(r1.LayerImages[l]).Pixels;
            int worst = a.Zip(RgbImage.Load(ra.LayerImages[l]).Pixels, (x, y) => Math.Abs(x - y)).Max();
            Assert.True(worst == 0, $"layer {l}: batched image differs from --batch 1's by {worst} levels ({inv.ToJsonString()})");
        }
        Directory.Delete(one, true);
        Directory.Delete(all, true);
    }
}
