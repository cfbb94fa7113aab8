using DiffusionLens.Pipelines;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// UNet2DConditionModel against real diffusers: for every fixtures/references/*/ folder whose model exists, the first
/// UNet call of the stock pipeline (batch [uncond, cond]) recomputed on the reference's device and dtype.
/// Tolerance: <see cref="ReferenceData.AssertMatches"/> (CPU float32: max |diff| &lt;= 1e-4 * max(1, max |ref|) and
/// relative L2 &lt;= 1e-5; CUDA float32 1e-3 / 1e-4; float16: the error-ratio criterion against the float32 truth).
/// Also: strict loading names a renamed key and a tensor of the wrong shape.
/// </summary>
public class UNetParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> References => new(ReferenceData.All());

    internal static UNet2DConditionModel LoadUNet(string folder) => ComponentLoader.LoadUNet(folder, torch.CPU, ScalarType.Float32);

    [Theory]
    [MemberData(nameof(References))]
    public void FirstUNetCall_MatchesDiffusers(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var _ = torch.no_grad();
        using var scope = NewDisposeScope();
        var (device, dtype) = (LensPipeline.ParseDevice(r.Device), LensPipeline.ParseDType(r.DType));
        using var unet = ComponentLoader.LoadUNet(r.Component("unet"), device, dtype);
        var sample = r.Read("unet.sample").to(device);
        var timestep = r.Read("unet.timestep").to(device);
        var ehs = r.Read("unet.encoder_hidden_states").to(device);
        output.WriteLine($"{reference}: sample [{string.Join(",", sample.shape)}], timestep {timestep.dtype} [{string.Join(",", timestep.shape)}] = {timestep.to(ScalarType.Float64).flatten()[0].item<double>()}, encoder_hidden_states [{string.Join(",", ehs.shape)}]");
        var actual = unet.Forward(sample, timestep, ehs);
        Assert.Equal(dtype, actual.dtype);
        output.WriteLine(r.RanOn);
        r.AssertMatches("unet.out", actual, output);
    }

    private static string CopyUNetFolder(string src)
    {
        var dst = Path.Combine(Path.GetTempPath(), "lens-strict-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    private static void RewriteWeights(string folder, Func<string, Tensor, (string, Tensor)> change)
    {
        var file = Path.Combine(folder, "diffusion_pytorch_model.safetensors");
        var sf = new SafetensorsFile(file);
        var tensors = sf.Entries.Keys.OrderBy(k => k, StringComparer.Ordinal)
            .Select(k => change(k, sf.Read(k))).Select(t => new KeyValuePair<string, Tensor>(t.Item1, t.Item2)).ToList();
        SafetensorsFile.Write(file + ".tmp", tensors);
        foreach (var t in tensors) t.Value.Dispose();
        File.Move(file + ".tmp", file, overwrite: true);
    }


    [Theory]
    [MemberData(nameof(References))]
    public void StrictLoad_RenamedKey_NamesBothKeys(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        var dir = CopyUNetFolder(r.Component("unet"));
        try
        {
            const string key = "conv_in.bias", renamed = "conv_in.bias_renamed";
            RewriteWeights(dir, (k, t) => (k == key ? renamed : k, t));
            var e = Assert.Throws<LensException>(() => { using var u = LoadUNet(dir); });
            output.WriteLine(e.Message);
            Assert.Contains("missing", e.Message);
            Assert.Contains(key, e.Message);
            Assert.Contains(renamed, e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [MemberData(nameof(References))]
    public void StrictLoad_WrongShape_NamesKey(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        var dir = CopyUNetFolder(r.Component("unet"));
        try
        {
            const string key = "time_embedding.linear_1.weight";
            RewriteWeights(dir, (k, t) => (k, k == key ? torch.cat(new[] { t, t }, 0) : t));
            var e = Assert.Throws<LensException>(() => { using var u = LoadUNet(dir); });
            output.WriteLine(e.Message);
            Assert.Contains("shape", e.Message);
            Assert.Contains(key, e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
