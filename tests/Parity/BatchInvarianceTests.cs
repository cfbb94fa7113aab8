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
/// --batch-invariant (issue #11: --batch auto's images identical to --batch 1's): inside a batch of layers every wrapped
/// kernel gives each layer's rows the numbers of a canonical call of BatchInvariance.CanonicalLayers layers' rows: a
/// full canonical batch runs as it is, other batches (one layer included) as they are where that agrees (checked once per
/// shape and batch, on pseudo-random then real data) and otherwise in canonical calls padded with zeros; a kernel whose
/// rows depend on their slot runs one call per layer. Outside a batch (invariance off) every call is one plain call.
/// The sweep records the option and what it did; on CUDA (where cuDNN's algorithm choice depends on the batch) it is
/// the default and a batched sweep gives --batch 1's images bit for bit.
/// </summary>
[Collection("pipelines")]
public class BatchInvarianceTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    private static Models.Conv2d RandomConv(Generator g, long inC, long outC, long k, long stride, long padding) =>
        new(new TorchSharp.Modules.Parameter(torch.randn(new[] { outC, inC, k, k }, generator: g), false),
            new TorchSharp.Modules.Parameter(torch.randn(new[] { outC }, generator: g), false), stride, padding);

    private static readonly int C = BatchInvariance.CanonicalLayers;

    /// <summary>
    /// A kernel whose numbers depend on the call's size (cuDNN picks algorithms by shape) gives every batch, one layer
    /// included, the canonical call's numbers: a full canonical batch is one plain call (never checked), other batches
    /// run in canonical calls padded with zeros once a check found their own call differs.
    /// </summary>
    [Fact]
    public void A_kernel_that_varies_with_the_batch_gives_every_batch_the_canonical_calls_numbers()
    {
        using var scope = NewDisposeScope();
        var decisions = new BatchInvariance.Decisions("Test");
        var sizes = new List<long>();
        // exact in the canonical call (C layers of 2 rows), off by 1e-3 at any other size
        Tensor Op(Tensor x)
        {
            sizes.Add(x.shape[0]);
            return x.shape[0] == 2 * C ? x * 3 : x * 3 + 1e-3;
        }
        var x = torch.randn(2 * C + 2, 5, generator: new Generator(4)); // C + 1 layers' rows
        foreach (int layers in new[] { 1, 3, C, C + 1 })
        {
            var rows = x.narrow(0, 0, 2 * layers);
            using (BatchInvariance.Layers(layers))
                Assert.True(BatchInvariance.Run(rows, decisions, Op).Equals(rows * 3), $"{layers} layer(s)");
        }
        long[] Calls(int layers)
        {
            sizes.Clear();
            using (BatchInvariance.Layers(layers)) BatchInvariance.Run(x.narrow(0, 0, 2 * layers), decisions, Op).Dispose();
            return sizes.ToArray();
        }
        Assert.Equal(new[] { 2L * C }, Calls(C)); // the canonical call itself
        Assert.Equal(new[] { 2L * C }, Calls(1)); // one layer padded to a canonical call
        Assert.Equal(new[] { 2L * C }, Calls(3));
        Assert.Equal(new[] { 2L * C, 2L * C }, Calls(C + 1)); // a full canonical call and a padded one
        var shape = Assert.Single(decisions);
        Assert.Equal(2, shape.Key.Unit);
        Assert.Equal("2x5", shape.Value.Shape); // one shape for every batch: rows per layer, not rows
        Assert.True(shape.Value.Padded);
        Assert.Equal(1, decisions.Padded);
        Assert.Equal(0, decisions.PerLayer);
    }

    /// <summary>
    /// A kernel that agrees with the canonical call on pseudo-random data but not on some real data is caught by the
    /// checks of its first real calls and padded from then on; one that always agrees is one plain call after them.
    /// </summary>
    [Fact]
    public void A_kernel_agreeing_only_on_pseudo_random_data_is_caught_on_real_data_and_one_that_agrees_runs_plain()
    {
        using var scope = NewDisposeScope();
        int calls = 0;
        // off outside the canonical call only for inputs holding a marker value (> 50): the pseudo-random check passes
        Tensor Op(Tensor x)
        {
            calls++;
            bool off = x.shape[0] != 2 * C && x.abs().max().item<float>() > 50;
            return off ? x * 3 + 1e-3 : x * 3;
        }
        var x = torch.randn(6, 5, generator: new Generator(5));
        var marked = x.clone();
        marked[5, 0] = torch.tensor(99f);
        var decisions = new BatchInvariance.Decisions("Test");
        var steady = new BatchInvariance.Decisions("Test");
        using (BatchInvariance.Layers(3))
        {
            Assert.True(BatchInvariance.Run(x, decisions, Op).Equals(x * 3));
            Assert.False(decisions.Single().Value.Padded);
            Assert.True(BatchInvariance.Run(marked, decisions, Op).Equals(marked * 3)); // a real-data check differs
            Assert.True(decisions.Single().Value.Padded);
            for (int i = 0; i < 10; i++) BatchInvariance.Run(x, steady, Op).Dispose(); // the checks end
            calls = 0;
            Assert.True(BatchInvariance.Run(x, steady, Op).Equals(x * 3));
            Assert.Equal(1, calls); // one plain call
            Assert.Equal(0, steady.Padded);
        }
    }

    /// <summary>A kernel whose rows depend on their slot in the call runs one call per layer, each layer's rows alone, at every batch.</summary>
    [Fact]
    public void A_kernel_whose_rows_depend_on_their_slot_runs_one_call_per_layer()
    {
        using var scope = NewDisposeScope();
        static Tensor Op(Tensor x) => x * 3 + torch.arange(x.shape[0], dtype: ScalarType.Float32).unsqueeze(1) * 1e-3;
        var x = torch.randn(6, 5, generator: new Generator(6));
        var decisions = new BatchInvariance.Decisions("Test");
        var perLayer = torch.cat(new[] { Op(x[0..2]), Op(x[2..4]), Op(x[4..6]) }, 0);
        using (BatchInvariance.Layers(3)) Assert.True(BatchInvariance.Run(x, decisions, Op).Equals(perLayer));
        using (BatchInvariance.Layers(1)) Assert.True(BatchInvariance.Run(x[2..4], decisions, Op).Equals(Op(x[2..4])));
        Assert.True(decisions.Single().Value.PerLayer);
        Assert.Equal(1, decisions.PerLayer);
    }

    /// <summary>What a canonical call gives one layer's rows: those rows first in a call of C layers' rows, zeros after them.</summary>
    private static Tensor CanonicalCall(Func<Tensor, Tensor> op, Tensor layerRows)
    {
        var padded = torch.zeros(new[] { layerRows.shape[0] * C }.Concat(layerRows.shape.Skip(1)).ToArray(), dtype: layerRows.dtype);
        padded[0..(int)layerRows.shape[0]] = layerRows;
        return op(padded)[0..(int)layerRows.shape[0]];
    }

    [Fact]
    public void ConvolutionInABatchOfLayersGivesEachLayerTheCanonicalCallsNumbersAndIsCheckedOncePerShape()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var conv = RandomConv(g, 3, 5, 3, 2, 1);
        var x = torch.randn(new long[] { 6, 3, 9, 7 }, generator: g);
        Tensor Plain(Tensor t) => nn.functional.conv2d(t, conv.weight, conv.bias, new long[] { 2, 2 }, new long[] { 1, 1 });
        // what every batch gives each layer's two rows: the canonical call's numbers
        var canonical = torch.cat(new[] { CanonicalCall(Plain, x[0..2]), CanonicalCall(Plain, x[2..4]), CanonicalCall(Plain, x[4..6]) }, 0);
        Assert.True(conv.forward(x).Equals(Plain(x)));
        Assert.Empty(conv.Invariance); // calls outside a batch of layers (invariance off) are never checked
        using (BatchInvariance.Layers(3))
        {
            Assert.Equal(3, BatchInvariance.CurrentLayers);
            Assert.True(conv.forward(x).Equals(canonical), "first call (checked) differs from the canonical calls");
            Assert.Single(conv.Invariance);
            Assert.True(conv.forward(x).Equals(canonical), "later call differs from the canonical calls");
            Assert.Single(conv.Invariance); // decided once per shape
            conv.forward(torch.randn(new long[] { 6, 3, 5, 5 }, generator: g)).Dispose();
            Assert.Equal(2, conv.Invariance.Count); // another shape is checked on its own
            conv.forward(torch.randn(new long[] { 4, 3, 5, 5 }, generator: g)).Dispose(); // 4 rows are not 3 layers' rows
            Assert.Equal(2, conv.Invariance.Count);
            conv.forward(x[0..3]).Dispose(); // one row per layer (a VAE decode of one image per layer) is checked too
            Assert.Equal(3, conv.Invariance.Count);
            using (BatchInvariance.Layers(1))
            {
                Assert.Equal(1, BatchInvariance.CurrentLayers);
                Assert.True(conv.forward(x[2..4]).Equals(canonical[2..4]), "one layer alone differs from the canonical call");
                Assert.Equal(3, conv.Invariance.Count); // the same shape (rows per layer) at another batch
            }
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
    public void GroupNormGivesEachLayerTheSameNumbersAtEveryBatch()
    {
        // libtorch's CPU group norm at [3, 32, 32, 32] (32 groups) gives row 0 other numbers than at [1, 32, 32, 32]
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var norm = Layers.GroupNorm(32, 32, 1e-6, true);
        var x = torch.randn(new long[] { 3, 32, 32, 32 }, generator: g);
        Tensor Plain(Tensor t) => nn.functional.group_norm(t, 32, norm.weight, norm.bias, 1e-6);
        var canonical = torch.cat(new[] { CanonicalCall(Plain, x[0..1]), CanonicalCall(Plain, x[1..2]), CanonicalCall(Plain, x[2..3]) }, 0);
        using (BatchInvariance.Layers(3))
        {
            Assert.True(norm.forward(x).Equals(canonical));
            Assert.True(norm.forward(x).Equals(canonical));
        }
        using (BatchInvariance.Layers(1))
            for (int l = 0; l < 3; l++)
                Assert.True(norm.forward(x[l..(l + 1)]).Equals(canonical[l..(l + 1)]), $"layer {l} alone");
        Assert.Single(norm.Invariance);
        Assert.True(nn.GroupNorm(32, 32, 1e-6, true).state_dict().Keys.SequenceEqual(norm.state_dict().Keys));
        Assert.True(nn.functional.group_norm(x, 32, torch.ones(32), torch.zeros(32), 1e-6).Equals(norm.forward(x))); // weight 1, bias 0, outside a batch
    }

    [Fact]
    public void AttentionPoolingIsOneInvariantOpGivingEachLayerTheCanonicalCallsNumbers()
    {
        // IF's text-time embedding: a mean over the sequence and batched products, whose CUDA kernels depend on the
        // batch; the pooling is checked as one op (its projections inside are not checked on their own)
        using var scope = NewDisposeScope();
        torch.manual_seed(5);
        var pool = new AttentionPooling(2, 8);
        var x = torch.randn(new long[] { 6, 5, 8 }, generator: new Generator(7));
        var canonical = torch.cat(new[] { CanonicalCall(pool.forward, x[0..2]), CanonicalCall(pool.forward, x[2..4]), CanonicalCall(pool.forward, x[4..6]) }, 0);
        using (BatchInvariance.Layers(3)) Assert.True(pool.forward(x).Equals(canonical));
        using (BatchInvariance.Layers(1)) Assert.True(pool.forward(x[2..4]).Equals(canonical[2..4]));
        Assert.Single(pool.Invariance);
        Assert.Equal("AttentionPooling", pool.Invariance.Owner);
        Assert.All(pool.named_modules(), m => Assert.True(m.module is not IBatchInvariant b || ReferenceEquals(b, pool) || b.Invariance.Count == 0,
            $"{m.name} was checked on its own inside the pooling"));
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
        var auto = CliRunner.TempPath("inv-auto");
        var o = new SweepOptions { ModelDir = Model("sd-tiny-b"), Prompt = "A few people are in the ocean splashing around", Steps = 2, Layers = "0,1,2", Batch = 3, OutDir = on, BatchInvariant = true };
        var ron = LensSweep.Run(o);
        var roff = LensSweep.Run(o with { OutDir = off, BatchInvariant = false });
        Assert.Null(new SweepOptions { ModelDir = "m", Prompt = "p", OutDir = "o" }.BatchInvariant); // auto by default
        var rone = LensSweep.Run(o with { OutDir = one, Batch = 1 });
        var mon = JsonNode.Parse(File.ReadAllText(ron.ManifestPath))!;
        Assert.True(mon["batch_invariant"]!.GetValue<bool>());
        var inv = mon["batch_invariance"]!;
        Assert.Equal(BatchInvariance.CanonicalLayers, inv["canonical_layers"]!.GetValue<int>());
        // every convolution, norm, projection and attention of the UNet and the VAE decoder ran in a batch of 3 layers
        // and was checked
        foreach (var kind in new[] { "Attention", "Conv2d", "GroupNorm", "LayerNorm", "Linear" })
        {
            int checkedShapes = inv["checked_shapes"]![kind]!.GetValue<int>();
            Assert.True(checkedShapes > 0, $"{kind}: {inv.ToJsonString()}");
            Assert.InRange(inv["padded_shapes"]![kind]!.GetValue<int>(), 0, checkedShapes);
            Assert.InRange(inv["per_layer_shapes"]![kind]!.GetValue<int>(), 0, checkedShapes);
        }
        var moff = JsonNode.Parse(File.ReadAllText(roff.ManifestPath))!;
        Assert.False(moff["batch_invariant"]!.GetValue<bool>());
        Assert.Null(moff["batch_invariance"]);
        Assert.Null(moff["conv_weights_channels_last"]); // a CUDA-only layout: no convolution on the CPU chooses it
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(rone.ManifestPath))!["batch_invariance"]); // one layer is checked too
        // auto (the default) is off on the CPU
        var rauto = LensSweep.Run(o with { OutDir = auto, BatchInvariant = null, Layers = "0", Steps = 1 });
        Assert.False(JsonNode.Parse(File.ReadAllText(rauto.ManifestPath))!["batch_invariant"]!.GetValue<bool>());
        // the CPU's own batch-dependent kernels (group norm, small GEMMs such as the time embedding's) run per layer:
        // --batch 1's images bit for bit
        foreach (var l in rone.Layers)
            Assert.Equal(RgbImage.Load(rone.LayerImages[l]).Pixels, RgbImage.Load(ron.LayerImages[l]).Pixels);
        foreach (var d in new[] { on, off, one, auto }) Directory.Delete(d, true);
    }

    /// <summary>
    /// Every pipeline's batched sweep with --batch-invariant on against --batch 1 on the CPU: the guided calls'
    /// layer-major order covers each pipeline's per-row inputs (SDXL's pooled embeddings and time ids, IF stage II's
    /// class labels and upscaled images), FLUX's unguided rows, DDPM's per-step noise, N images per layer. Within one 8-bit
    /// level on the CPU: after every wrapped kernel gives the canonical call's numbers, an element-wise CPU kernel still gives a value other
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
        Assert.Contains("--batch-invariant must be auto, on or off (got 'maybe')", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir));
    }

    /// <summary>
    /// On CUDA (float16, the tiny SD and IF models; 12 layers), with the default --batch-invariant (auto: on for CUDA):
    /// all layers in one batch, and batches of 5, 5 and 2, give --batch 1's images bit for bit, though cuDNN's
    /// algorithm for some convolutions changes with the batch (an H200's does). Skipped without CUDA.
    /// </summary>
    [Theory]
    [InlineData("sd-tiny-12", "0:12")]
    [InlineData("if-tiny-a", "0:24:2")]
    public void OnCudaABatchInvariantSweepGivesBatchOnesImagesBitForBit(string model, string layers)
    {
        bool cuda;
        try { cuda = torch.cuda.is_available(); } catch (Exception) { cuda = false; }
        if (!cuda) Assert.Skip("needs CUDA: cuDNN's batch-dependent algorithm choice is what --batch-invariant guards against");
        var one = CliRunner.TempPath("cuda-b1");
        var all = CliRunner.TempPath("cuda-ball");
        var five = CliRunner.TempPath("cuda-b5");
        var o = new SweepOptions { ModelDir = Model(model), Prompt = "A few people are in the ocean splashing around", Steps = 4, Device = "cuda", DType = "float16", Batch = 1, Layers = layers, OutDir = one,
            Variant = model.StartsWith("if-", StringComparison.Ordinal) ? "fp16" : null }; // the tiny IF's text encoder is saved as variant files
        var r1 = LensSweep.Run(o);
        var ra = LensSweep.Run(o with { OutDir = all, Batch = 1, AutoBatch = true });
        var m = JsonNode.Parse(File.ReadAllText(ra.ManifestPath))!;
        Assert.Equal(r1.Layers.Length, m["batch"]!.GetValue<int>());
        Assert.True(m["batch_invariant"]!.GetValue<bool>()); // auto is on for CUDA
        var inv = m["batch_invariance"]!;
        Assert.True(inv["checked_shapes"]!["Conv2d"]!.GetValue<int>() > 0, inv.ToJsonString());
        var r5 = LensSweep.Run(o with { OutDir = five, Batch = 5 }); // batches of 5, 5 and 2 layers: padded calls
        foreach (var (r, what) in new[] { (ra, "all layers in one batch"), (r5, "batches of 5") })
            foreach (var l in r1.Layers)
            {
                var a = RgbImage.Load(r1.LayerImages[l]).Pixels;
                int worst = a.Zip(RgbImage.Load(r.LayerImages[l]).Pixels, (x, y) => Math.Abs(x - y)).Max();
                Assert.True(worst == 0, $"{model} layer {l}, {what}: image differs from --batch 1's by {worst} levels ({inv.ToJsonString()})");
            }
        foreach (var d in new[] { one, all, five }) Directory.Delete(d, true);
    }
}
