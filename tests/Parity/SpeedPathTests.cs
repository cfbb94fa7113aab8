using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using DiffusionLens.Reports;
using DiffusionLens.Sweep;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The fast paths of issue #11 keep their promises: modules built for loading hold uninitialised parameters of the
/// target dtype (and are fully overwritten: the parity tests compare the loaded models with diffusers), the fast PNG
/// setting writes the same pixels, and --batch auto records its choice and gives --batch 1's images.
/// </summary>
[Collection("pipelines")]
public class SpeedPathTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    [Fact]
    public void Postprocessing_left_on_the_device_gives_the_host_path_s_8_bit_images()
    {
        using var scope = NewDisposeScope();
        var images = torch.randn(new long[] { 3, 3, 17, 13 }, generator: new Generator(5)).to(ScalarType.Float16) * 1.2;
        var host = DiffusionLens.Pipelines.DenoisingPipeline.ToUnitHwc(images);
        var kept = DiffusionLens.Pipelines.DenoisingPipeline.ToUnitHwc(images, onDevice: true);
        Assert.Equal(images.device.type, kept.device.type);
        Assert.Equal(host.data<float>().ToArray(), kept.cpu().data<float>().ToArray());
        var a = RgbImage.FromUnitNhwc(host);
        var b = RgbImage.FromUnitNhwc(kept);
        Assert.Equal(3, b.Length);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal((13, 17), (b[i].Width, b[i].Height));
            Assert.Equal(a[i].Pixels, b[i].Pixels);
            // each image its own array, the row-major [H, W, 3] bytes of (x*255).round()
            var expected = (host[i] * 255).round().to(ScalarType.Byte).contiguous().data<byte>().ToArray();
            Assert.Equal(expected, b[i].Pixels);
        }
        Assert.NotSame(b[0].Pixels, b[1].Pixels);
    }

    [Fact]
    public void Host_warm_up_runs_the_output_path_and_writes_nothing()
    {
        var before = Directory.GetFileSystemEntries(Environment.CurrentDirectory).Length;
        HostWarmUp.Run(CPU, LensSweep.PngZlibLevel);
        Assert.Equal(before, Directory.GetFileSystemEntries(Environment.CurrentDirectory).Length);
    }

    [Fact]
    public void BaddbmmIsInputPlusTheBatchedProduct()
    {
        // the order-finding wrapper around TorchSharp's torch.baddbmm (its arguments reach the native call in another
        // order), with the broadcast, expanded and transposed operands the transformer projections pass
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var bias = torch.randn(new long[] { 5 }, generator: g, dtype: ScalarType.Float64);
        var a = torch.randn(new long[] { 3, 6, 4 }, generator: g, dtype: ScalarType.Float64).transpose(1, 2); // [3, 4, 6], a view
        var w = torch.randn(new long[] { 6, 5 }, generator: g, dtype: ScalarType.Float64);
        var got = Baddbmm.Apply(bias.expand(3, 4, 5), a, w.expand(3, 6, 5));
        var want = torch.bmm(a, w.expand(3, 6, 5)) + bias;
        Assert.Equal(new long[] { 3, 4, 5 }, got.shape);
        Assert.True(got.allclose(want, rtol: 1e-12, atol: 1e-12), $"max diff {(got - want).abs().max().item<double>()}");
    }

    [Fact]
    public void GegluHalvesEqualDiffusersChunkedFormula()
    {
        // GEGLU runs its two halves as two GEMMs on views of proj's rows: hidden * gelu(gate) with (hidden, gate) =
        // proj(x).chunk(2, -1), the first half the hidden states, the second the gate (diffusers' order)
        using var scope = NewDisposeScope();
        var g = new Generator(12);
        var geglu = new GEGLU(8, 6);
        geglu.to(ScalarType.Float64);
        foreach (var (_, p) in geglu.named_parameters())
            using (torch.no_grad()) p.copy_(torch.randn(p.shape, generator: g, dtype: ScalarType.Float64));
        var x = torch.randn(new long[] { 2, 5, 8 }, generator: g, dtype: ScalarType.Float64);
        var sd = geglu.state_dict();
        var parts = nn.functional.linear(x, sd["proj.weight"], sd["proj.bias"]).chunk(2, -1);
        var want = parts[0] * nn.functional.gelu(parts[1]);
        var got = geglu.forward(x);
        Assert.True(got.allclose(want, rtol: 1e-12, atol: 1e-12), $"max diff {(got - want).abs().max().item<double>()}");
    }

    [Fact]
    public void BatchedImageConversionEqualsThePerImageConversion()
    {
        // values on and next to the rounding boundaries of (x*255).round(), in float16 as the pipelines produce them
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var x = torch.rand(new long[] { 3, 17, 13, 3 }, generator: g);
        x[0, 0, .., 0] = torch.arange(13) / 255.0 + 0.5 / 255.0; // exact halves: round half to even
        x = x.to(ScalarType.Float16);
        var batched = Reports.RgbImage.FromUnitNhwc(x);
        Assert.Equal(3, batched.Length);
        for (int i = 0; i < 3; i++)
        {
            var single = Reports.RgbImage.FromUnitHwc(x[i]);
            Assert.Equal((single.Width, single.Height), (batched[i].Width, batched[i].Height));
            Assert.True(single.Pixels.AsSpan().SequenceEqual(batched[i].Pixels), $"image {i} differs");
        }
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && (a == b).all().item<bool>();

    [Fact]
    public void LinearComputesAsAtLinear_AddmmForTwoDAndContiguousInput()
    {
        // PyTorch's at::linear: addmm (bias in the GEMM) for 2-D and contiguous N-D input, matmul + add otherwise; the
        // module must give exactly those numbers in each case (float64 and float32 on the CPU)
        using var scope = NewDisposeScope();
        var g = new Generator(7);
        foreach (var dtype in new[] { ScalarType.Float64, ScalarType.Float32 })
        {
            var w = torch.randn(new long[] { 5, 8 }, dtype: dtype, generator: g);
            var b = torch.randn(new long[] { 5 }, dtype: dtype, generator: g);
            var linear = new Models.Linear(new TorchSharp.Modules.Parameter(w.clone(), false), new TorchSharp.Modules.Parameter(b.clone(), false));
            var x2 = torch.randn(new long[] { 6, 8 }, dtype: dtype, generator: g);
            Assert.True(Same(torch.addmm(b, x2, w.t(), 1, 1), linear.forward(x2)));
            var x3 = torch.randn(new long[] { 2, 3, 8 }, dtype: dtype, generator: g);
            Assert.True(Same(torch.addmm(b, x3.reshape(6, 8), w.t(), 1, 1).view(2, 3, 5), linear.forward(x3)));
            var strided = torch.randn(new long[] { 3, 2, 8 }, dtype: dtype, generator: g).transpose(0, 1);
            Assert.False(strided.is_contiguous());
            Assert.True(Same(strided.matmul(w.t()).add_(b), linear.forward(strided)));
            var noBias = new Models.Linear(new TorchSharp.Modules.Parameter(w.clone(), false), null);
            Assert.True(Same(x3.matmul(w.t()), noBias.forward(x3)));
            Assert.Equal(new long[] { 2, 3, 5 }, linear.forward(x3).shape);
        }
    }

    [Fact]
    public void LayersBuiltForLoadingAreUninitialisedInTheTargetDtype_OtherwiseAsBefore()
    {
        var cfg = DiffusersConfig.Load(Path.Combine(Model("sd-tiny-12"), "unet", "config.json"));
        UNet2DConditionModel forLoading;
        using (Layers.ForLoading(torch.CPU, ScalarType.BFloat16)) forLoading = UNet2DConditionModel.FromConfig(cfg);
        using (forLoading)
        {
            Assert.False(Layers.Uninitialised); // the scope ends with the using block
            Layers.CheckMaterialised(forLoading, torch.CPU, "unet");
            Assert.All(forLoading.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        }
        using var plain = UNet2DConditionModel.FromConfig(cfg);
        Assert.All(plain.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        // PyTorch's initialisation outside the scope: GroupNorm weights are 1, conv weights are random
        var sd = plain.state_dict();
        Assert.Equal(1.0f, sd["conv_norm_out.weight"].min().ToSingle());
        Assert.True(sd["conv_in.weight"].std().ToSingle() > 0);
    }

    [Fact]
    public void StrictLoadReadsEveryTensorExactly_InTheFileDtypeOrConverted()
    {
        // F16 text encoder of sd-tiny-b: a float16 target takes the bytes as they are, a float32 one converts them
        var dir = Path.Combine(Model("sd-tiny-b"), "text_encoder");
        var weights = WeightSet.FromFolder(dir);
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.Float32 })
        {
            using var model = DiffusionLens.TextEncoders.ClipTextModel.FromFolder(dir, torch.CPU, dtype);
            foreach (var (key, value) in model.state_dict())
            {
                var fileKey = weights.Contains(key) ? key : "text_model." + key;
                if (!weights.Contains(fileKey)) continue;
                using var expected = weights.Read(fileKey).to(dtype);
                Assert.True(ReferenceData.Identical(expected, value), $"{key} ({dtype}) differs from the file");
            }
        }
    }

    [Fact]
    public void FastPngSettingWritesTheSamePixels()
    {
        var rng = new Random(11);
        var px = new byte[97 * 61 * 3];
        rng.NextBytes(px);
        var img = new RgbImage(97, 61, px);
        var dir = CliRunner.TempPath("png");
        Directory.CreateDirectory(dir);
        img.SavePng(Path.Combine(dir, "fast.png"), 1);
        img.SavePng(Path.Combine(dir, "default.png"));
        Assert.Equal(px, RgbImage.Load(Path.Combine(dir, "fast.png")).Pixels);
        Assert.Equal(px, RgbImage.Load(Path.Combine(dir, "default.png")).Pixels);
        Directory.Delete(dir, true);
    }

    /// <summary>On the CPU --batch auto is 1: bit-identical images to --batch 1, and the manifest says what was chosen.</summary>
    [Fact]
    public void AutoBatchOnTheCpuIsOneAndGivesBatchOnesImagesBitForBit()
    {
        var one = CliRunner.TempPath("b1");
        var auto = CliRunner.TempPath("bauto");
        var common = new SweepOptions { ModelDir = Model("sd-tiny-b"), Prompt = "A few people are in the ocean splashing around", Steps = 3, Layers = "0,2", OutDir = one };
        var r1 = LensSweep.Run(common);
        var ra = LensSweep.Run(common with { OutDir = auto, AutoBatch = true });
        foreach (var l in r1.Layers)
            Assert.Equal(RgbImage.Load(r1.LayerImages[l]).Pixels, RgbImage.Load(ra.LayerImages[l]).Pixels);
        var m = JsonNode.Parse(File.ReadAllText(ra.ManifestPath))!;
        Assert.Equal(1, m["batch"]!.GetValue<int>());
        Assert.Equal("auto", m["batch_requested"]!.GetValue<string>());
        var t = m["timings_s"]!;
        foreach (var phase in new[] { "encode", "denoise", "denoise_per_step", "decode", "write_images" })
            Assert.True(t[phase]!.GetValue<double>() > 0, $"timings_s.{phase} missing");
        Assert.True(t["total"]!.GetValue<double>() >= t["denoise"]!.GetValue<double>() + t["decode"]!.GetValue<double>());
        // the whole run is accounted for: the phases before the sweep (prepare: option checks against the configs, the
        // output folder; load) are in the total and no phase is counted twice
        Assert.True(t["prepare"]!.GetValue<double>() > 0, "timings_s.prepare missing");
        double phases = new[] { "prepare", "load", "encode", "warmup", "denoise", "decode", "images_to_host", "write_images" }.Sum(k => t[k]!.GetValue<double>());
        Assert.True(phases <= t["total"]!.GetValue<double>() + 1e-3, $"phases {phases} s exceed total {t["total"]}");
        // and what no phase covers is stated: the phases and `other` add up to the total (each rounded to 1e-4 s)
        double other = t["other"]!.GetValue<double>();
        Assert.True(Math.Abs(phases + other - t["total"]!.GetValue<double>()) <= 1e-3, $"phases {phases} s + other {other} s != total {t["total"]}");
        // the weights' hashes came from a worker thread, and the manifest waited for them at most briefly on a tiny model
        Assert.True(t["weights_hash_background"]!.GetValue<double>() >= 0);
        Assert.Equal(Directory.GetFiles(Model("sd-tiny-b"), "*.safetensors", SearchOption.AllDirectories).Length,
            m["weights_sha256"]!.AsObject().Count);
        Directory.Delete(one, true);
        Directory.Delete(auto, true);
    }
}
