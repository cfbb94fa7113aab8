using System.Reflection;
using System.Text.Json.Nodes;
using DiffusionLens.Kernels;
using DiffusionLens.Models;
using DiffusionLens.Sweep;
using DiffusionLens.Testing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The fused GroupNorm / residual kernels (<see cref="FusedKernels"/>, issue #11). On CUDA: against a float64
/// computation of the same formula, each kernel's error must not exceed libtorch's own op chain's error on the same
/// inputs (the error-ratio criterion of the GPU runner, never a tolerance recorded on one GPU), in both layouts, and a
/// row's numbers must not depend on the rows beside it. On the CPU: options, the cache, the layout test and that the
/// CPU path never reaches the kernels.
/// </summary>
[Collection("FusedKernels")] // the mode is process-wide
public class FusedKernelTests
{
    private static string Model(string name) => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", name);

    private static bool Identical(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static void NeedCuda()
    {
        bool cuda;
        try { cuda = torch.cuda.is_available(); } catch (Exception) { cuda = false; }
        if (!cuda) Assert.Skip("needs CUDA: the fused kernels are CUDA kernels compiled by NVRTC");
    }

    [Fact]
    public void Mode_values_parse_and_a_bad_one_names_the_option()
    {
        Assert.Equal(FusedKernels.Mode.Auto, FusedKernels.Parse("auto", "--fused-kernels"));
        Assert.Equal(FusedKernels.Mode.On, FusedKernels.Parse(" ON ", "--fused-kernels"));
        Assert.Equal(FusedKernels.Mode.Off, FusedKernels.Parse("off", "--fused-kernels"));
        Assert.Null(FusedKernels.Parse(null, "--fused-kernels"));
        var e = Assert.Throws<LensException>(() => FusedKernels.Parse("fast", "--fused-kernels"));
        Assert.Equal("--fused-kernels must be auto, on or off (got 'fast')", e.Message);
    }

    [Fact]
    public void Cli_rejects_a_bad_value_and_on_without_cuda_before_writing_anything()
    {
        var outDir = CliRunner.TempPath("fused-cli");
        var r = CliRunner.Run("sweep", "--model", Model("sd-tiny-b"), "--prompt", "x", "--steps", "1", "--fused-kernels", "maybe", "--out", outDir);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--fused-kernels must be auto, on or off (got 'maybe')", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir));
        var r2 = CliRunner.Run("sweep", "--model", Model("sd-tiny-b"), "--prompt", "x", "--steps", "1", "--device", "cpu", "--fused-kernels", "on", "--out", outDir);
        Assert.NotEqual(0, r2.ExitCode);
        Assert.Contains("--fused-kernels on needs a CUDA device", r2.Stderr);
        Assert.DoesNotContain("   at ", r2.Stderr);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void The_cpu_path_never_reaches_the_kernels_and_the_manifest_says_so()
    {
        using (FusedKernels.Use(FusedKernels.Mode.On))
        {
            using var x = torch.randn(2, 64, 4, 4, dtype: ScalarType.Float16);
            Assert.False(FusedKernels.Applies(x));
        }
        var outDir = CliRunner.TempPath("fused-cpu");
        int before = FusedKernels.Launches;
        var r = LensSweep.Run(new SweepOptions { ModelDir = Model("sd-tiny-b"), Prompt = "x", Steps = 1, OutDir = outDir, FusedKernels = "auto" });
        Assert.Equal(before, FusedKernels.Launches);
        var m = JsonNode.Parse(File.ReadAllText(r.ManifestPath))!;
        Assert.StartsWith("auto: ", m["fused_kernels"]!.GetValue<string>());
        Directory.Delete(outDir, true);
    }

    [Fact]
    public void Channels_last_is_recognised_in_four_and_three_dimensions()
    {
        using var x = torch.randn(2, 8, 3, 5);
        Assert.False(FusedKernels.IsChannelsLast(x));
        using var cl = FusedKernels.ToChannelsLast(x);
        Assert.True(FusedKernels.IsChannelsLast(cl));
        Assert.Equal(new long[] { 120, 1, 40, 8 }, cl.stride());
        Assert.True(Identical(cl, x));
        using var nlc = torch.randn(2, 15, 8).transpose(1, 2); // [N, C, L] over [N, L, C] memory
        Assert.True(FusedKernels.IsChannelsLast(nlc));
        using var other = x.transpose(2, 3);
        Assert.False(FusedKernels.IsChannelsLast(other));
    }

    [Fact]
    public void The_kernel_source_is_embedded_with_every_kernel_the_launcher_calls()
    {
        using var s = typeof(FusedKernels).Assembly.GetManifestResourceStream("DiffusionLens.Kernels.group_norm.cu");
        Assert.NotNull(s);
        var src = new StreamReader(s!).ReadToEnd();
        foreach (var kernel in new[] { "gn_stats_##SUFFIX", "gn_apply_##SUFFIX", "add_residual_##SUFFIX" })
            Assert.Contains($"__global__ void {kernel}(", src);
        foreach (var suffix in new[] { "LENS_KERNELS(f16, F16)", "LENS_KERNELS(bf16, BF16)", "LENS_KERNELS(f32, F32)" })
            Assert.Contains(suffix, src);
        Assert.DoesNotContain("#include", src); // NVRTC compiles it without CUDA's headers
    }

    [Fact]
    public void The_kernel_cache_returns_what_it_stored_and_nothing_for_a_missing_or_partial_entry()
    {
        var dir = CliRunner.TempPath("kernel-cache");
        var key = KernelCache.Key("group_norm.cu", "source", 90, "13.0");
        Assert.NotEqual(key, KernelCache.Key("group_norm.cu", "source", 80, "13.0"));
        Assert.NotEqual(key, KernelCache.Key("group_norm.cu", "source2", 90, "13.0"));
        Assert.NotEqual(key, KernelCache.Key("group_norm.cu", "source", 90, "12.8"));
        Assert.Null(KernelCache.Read(key, dir));
        KernelCache.Write(key, [1, 2, 3], "cubin sm_90", dir);
        var got = KernelCache.Read(key, dir);
        Assert.NotNull(got);
        Assert.Equal(new byte[] { 1, 2, 3 }, got!.Value.Image);
        Assert.Equal("cubin sm_90", got.Value.Kind);
        Assert.Empty(Directory.GetFiles(dir, "*.tmp*"));
        File.Delete(Path.Combine(dir, key + ".kind"));
        Assert.Null(KernelCache.Read(key, dir));
        Directory.Delete(dir, true);
    }

    // --- CUDA ---

    private static Tensor Reference(Tensor x, long groups, Tensor w, Tensor b, double eps, FusedKernels.Activation act, Tensor? ss, Tensor? bi)
    {
        var x64 = x.to(ScalarType.Float64);
        long n = x.shape[0], c = x.shape[1];
        var tail = Enumerable.Repeat(1L, (int)x.ndim - 2).ToArray();
        if (bi is not null) x64 = x64 + bi.to(ScalarType.Float64).reshape([bi.ndim == 2 ? n : 1, c, .. tail]);
        var y = nn.functional.group_norm(x64, groups, w.to(ScalarType.Float64), b.to(ScalarType.Float64), eps);
        if (ss is not null)
        {
            var s = ss.reshape(n, -1).to(ScalarType.Float64);
            y = y * (1 + s[.., ..(int)c].reshape([n, c, .. tail])) + s[.., (int)c..(int)(2 * c)].reshape([n, c, .. tail]);
        }
        return Act(y, act);
    }

    private static Tensor Stock(Tensor x, long groups, Tensor w, Tensor b, double eps, FusedKernels.Activation act, Tensor? ss, Tensor? bi)
    {
        long n = x.shape[0], c = x.shape[1];
        var tail = Enumerable.Repeat(1L, (int)x.ndim - 2).ToArray();
        if (bi is not null) x = x + bi.reshape([bi.ndim == 2 ? n : 1, c, .. tail]);
        var y = nn.functional.group_norm(x, groups, w, b, eps);
        if (ss is not null)
        {
            var s = ss.reshape(n, -1);
            y = y * (1 + s[.., ..(int)c].reshape([n, c, .. tail])) + s[.., (int)c..(int)(2 * c)].reshape([n, c, .. tail]);
        }
        return Act(y, act);
    }

    private static Tensor Act(Tensor y, FusedKernels.Activation act) => act switch
    {
        FusedKernels.Activation.Silu => nn.functional.silu(y),
        FusedKernels.Activation.Gelu => nn.functional.gelu(y),
        FusedKernels.Activation.Mish => nn.functional.mish(y),
        FusedKernels.Activation.Relu => nn.functional.relu(y),
        _ => y,
    };

    private static double MaxErr(Tensor a, Tensor reference) => (a.to(ScalarType.Float64).reshape(reference.shape) - reference).abs().max().item<double>();

    /// <summary>
    /// Fused GroupNorm (bias in, scale-shift, every activation; channels-first, channels-last and [N, L, C] memory;
    /// float16 and bfloat16; vectorised and odd shapes): its error against float64 is at most libtorch's op chain's
    /// (ratio 1.0; measured 0.2-0.99 on an H200).
    /// </summary>
    [Fact]
    public void On_cuda_fused_group_norm_is_at_least_as_close_to_float64_as_libtorchs_ops()
    {
        NeedCuda();
        using var mode = FusedKernels.Use(FusedKernels.Mode.Auto);
        var cuda = new torch.Device("cuda");
        torch.manual_seed(0);
        var worst = new List<string>();
        foreach (var shape in new long[][] { [6, 128, 16, 16], [3, 64, 7, 5], [2, 96, 3, 3], [4, 320, 8, 8] })
        foreach (var dt in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        foreach (var act in Enum.GetValues<FusedKernels.Activation>().Where(a => a != FusedKernels.Activation.GeluTanh))
        foreach (var variant in new[] { "plain", "ss", "bias", "rowbias+ss" })
        foreach (var layout in new[] { "nchw", "nhwc", "nlc" })
        {
            using var scope = NewDisposeScope();
            long n = shape[0], c = shape[1];
            var x = (torch.randn(shape) * 3 + 1).to(dt, cuda);
            var w = (torch.randn(c) * 0.5 + 1).to(dt, cuda);
            var b = (torch.randn(c) * 0.5).to(dt, cuda);
            Tensor? ss = variant.Contains("ss") ? (torch.randn(n, 2 * c, 1, 1) * 0.3).to(dt, cuda) : null;
            Tensor? bi = variant == "bias" ? torch.randn(c).to(dt, cuda) : variant == "rowbias+ss" ? torch.randn(n, c).to(dt, cuda) : null;
            var xin = layout switch
            {
                "nhwc" => FusedKernels.ToChannelsLast(x),
                "nlc" => x.reshape(n, c, -1).transpose(1, 2).contiguous().transpose(1, 2),
                _ => x,
            };
            Assert.True(FusedKernels.Applies(xin));
            var reference = Reference(x, 32, w, b, 1e-6, act, ss, bi);
            var ours = FusedKernels.GroupNorm(xin, 32, w, b, 1e-6, act, ss, bi);
            Assert.Equal(xin.stride(), ours.stride()); // the result keeps the input's layout
            double eo = MaxErr(ours, reference), et = MaxErr(Stock(x, 32, w, b, 1e-6, act, ss, bi), reference);
            if (!(eo <= et)) worst.Add($"[{string.Join(",", shape)}] {dt} {act} {variant} {layout}: fused {eo:G3} > libtorch {et:G3}");
        }
        Assert.True(worst.Count == 0, string.Join("\n", worst));
    }

    /// <summary>The residual kernel ((a + bias_a) + (r + bias_r)) / scale: error against float64 at most libtorch's, both layouts.</summary>
    [Fact]
    public void On_cuda_the_fused_residual_is_at_least_as_close_to_float64_as_libtorchs_ops()
    {
        NeedCuda();
        using var mode = FusedKernels.Use(FusedKernels.Mode.Auto);
        var cuda = new torch.Device("cuda");
        torch.manual_seed(1);
        foreach (var shape in new long[][] { [6, 128, 16, 16], [3, 64, 7, 5] })
        foreach (var dt in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        foreach (var nhwc in new[] { false, true })
        foreach (var scale in new[] { 1.0, 1.5 })
        {
            using var scope = NewDisposeScope();
            var a = torch.randn(shape).to(dt, cuda);
            var r = torch.randn(shape).to(dt, cuda);
            var ba = torch.randn(shape[1]).to(dt, cuda);
            var br = torch.randn(shape[1]).to(dt, cuda);
            var reference = (a.to(ScalarType.Float64) + ba.to(ScalarType.Float64).reshape(-1, 1, 1) + r.to(ScalarType.Float64) + br.to(ScalarType.Float64).reshape(-1, 1, 1)) / scale;
            var stock = ((a + ba.reshape(-1, 1, 1)) + (r + br.reshape(-1, 1, 1))) / scale;
            var ours = FusedKernels.Residual(nhwc ? FusedKernels.ToChannelsLast(a) : a, ba, r, br, scale);
            Assert.Equal(nhwc, FusedKernels.IsChannelsLast(ours) && !ours.is_contiguous());
            double eo = MaxErr(ours, reference), et = MaxErr(stock, reference);
            Assert.True(eo <= et, $"[{string.Join(",", shape)}] {dt} nhwc={nhwc} scale={scale}: fused {eo:G3} > libtorch {et:G3}");
        }
    }

    /// <summary>
    /// A row's fused GroupNorm and residual do not depend on the rows beside it, on the memory layout or on alignment:
    /// rows 0-1 alone (a fresh copy, an unaligned view, channels-last) and row 0 alone equal those rows of a 24-row call,
    /// bit for bit, for shapes on the vectorised path and off it (an H200 sweep once differed from --batch 1 because a
    /// [1, C, H, W] call was summed in another order than the same row inside a batch).
    /// </summary>
    [Theory]
    [InlineData(256, 32, 16, 16)] // 8 channels a group, HW % 8 == 0: vectorised loads
    [InlineData(16, 8, 32, 32)]   // 2 channels a group (the tiny VAE's)
    [InlineData(64, 8, 2, 2)]     // HW = 4: one by one
    [InlineData(40, 8, 3, 5)]     // odd everything
    public void On_cuda_the_fused_kernels_are_batch_and_layout_invariant(int c, int groups, int h, int w)
    {
        NeedCuda();
        using var mode = FusedKernels.Use(FusedKernels.Mode.Auto);
        var cuda = new torch.Device("cuda");
        torch.manual_seed(2);
        using var scope = NewDisposeScope();
        var x = torch.randn(24, c, h, w).to(ScalarType.Float16, cuda);
        var g = torch.randn(c).to(ScalarType.Float16, cuda);
        var ss = (torch.randn(24, 2 * c) * 0.2).to(ScalarType.Float16, cuda);
        var bi = (torch.randn(24, c) * 0.2).to(ScalarType.Float16, cuda);
        Tensor Norm(Tensor v, long rows) => FusedKernels.GroupNorm(v, groups, g, g, 1e-6, FusedKernels.Activation.Silu, ss[..(int)rows], bi[..(int)rows]);
        var all = Norm(x, 24);
        var unaligned = torch.empty(2 * c * h * w + 1, dtype: ScalarType.Float16, device: cuda).narrow(0, 1, 2 * c * h * w).view(2, c, h, w);
        unaligned.copy_(x[..2]);
        foreach (var (name, rows) in new[] { ("a copy", x[..2].clone()), ("an unaligned view", unaligned), ("channels-last", FusedKernels.ToChannelsLast(x[..2])), ("one row", x[..1].clone()) })
            Assert.True(Identical(all[..(int)rows.shape[0]], Norm(rows, rows.shape[0])), $"GroupNorm of {name} differs from the batch's rows");
        Assert.True(Identical(Norm(FusedKernels.ToChannelsLast(x), 24), all), "channels-last batch differs");
        var res = FusedKernels.Residual(x, g, x, g, 1.0);
        Assert.True(Identical(res[..2], FusedKernels.Residual(unaligned, g, FusedKernels.ToChannelsLast(x[..2]), g, 1.0)), "residual differs");
    }

    /// <summary>
    /// ResnetBlock2D (IF's scale-shift with GELU and a shortcut; SD's default with SiLU) on CUDA float16: the fused path's
    /// error against the float32 block is at most 1.25x the unfused float16 path's (mean), and --fused-kernels off runs no kernel.
    /// </summary>
    [Fact]
    public void On_cuda_a_fused_resnet_block_is_as_close_to_float32_as_the_unfused_one()
    {
        NeedCuda();
        var cuda = new torch.Device("cuda");
        foreach (var (norm, act, inC, outC) in new[] { ("scale_shift", "gelu", 64, 128), ("default", "silu", 128, 128) })
        {
            using var scope = NewDisposeScope();
            torch.manual_seed(3);
            var block = new ResnetBlock2D(inC, outC, tembChannels: 96, groups: 32, nonLinearity: act, timeEmbeddingNorm: norm);
            using (torch.no_grad())
                foreach (var p in block.parameters()) p.copy_(torch.randn_like(p) * 0.2);
            block.to(cuda);
            var x = torch.randn(6, inC, 16, 16).to(cuda);
            var temb = torch.randn(6, 96).to(cuda);
            Tensor truth, unfused, fused;
            using (torch.no_grad())
            {
                using (FusedKernels.Use(FusedKernels.Mode.Off)) truth = block.forward(x, temb).to(ScalarType.Float64);
                block.to(ScalarType.Float16);
                var xh = x.to(ScalarType.Float16);
                var th = temb.to(ScalarType.Float16);
                int before = FusedKernels.Launches;
                using (FusedKernels.Use(FusedKernels.Mode.Off)) unfused = block.forward(xh, th).to(ScalarType.Float64);
                Assert.Equal(before, FusedKernels.Launches);
                using (FusedKernels.Use(FusedKernels.Mode.Auto)) fused = block.forward(xh, th).to(ScalarType.Float64);
                Assert.True(FusedKernels.Launches >= before + 5, "the fused path ran no kernels");
            }
            double eu = (unfused - truth).abs().mean().item<double>(), ef = (fused - truth).abs().mean().item<double>();
            Assert.True(ef <= 1.25 * eu, $"{norm}/{act}: fused mean error {ef:G3} against unfused {eu:G3}");
        }
    }
}
