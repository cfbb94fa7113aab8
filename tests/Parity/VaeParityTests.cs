using DiffusionLens.Pipelines;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// AutoencoderKL against real diffusers, for every Stable Diffusion reference whose model exists: vae.decode(z).sample
/// (z unscaled) and encode(x).latent_dist mean / logvar, in float32 on the CPU (weights stored in any dtype are loaded
/// as float32). Tolerance as <see cref="UNetParityTests"/>: max |diff| &lt;= 1e-4 * max(1, max |ref|), relative L2 &lt;= 1e-5.
/// </summary>
public class VaeParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> References => new(ReferenceData.All("sd"));

    [Theory]
    [MemberData(nameof(References))]
    public void Decode_MatchesDiffusers(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var _ = torch.no_grad();
        using var scope = NewDisposeScope();
        var device = LensPipeline.ParseDevice(r.Device);
        using var vae = ComponentLoader.LoadVae(r.Component("vae"), device, LensPipeline.ParseDType(r.DType));
        var actual = vae.Decode(r.Read("vae.decode_in").to(device));
        UNetParityTests.AssertClose(output, $"{reference} vae.decode_out", actual, r.Read("vae.decode_out"), r.Tol);
    }

    [Theory]
    [MemberData(nameof(References))]
    public void Encode_MatchesDiffusers(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var _ = torch.no_grad();
        using var scope = NewDisposeScope();
        var device = LensPipeline.ParseDevice(r.Device);
        using var vae = ComponentLoader.LoadVae(r.Component("vae"), device, LensPipeline.ParseDType(r.DType));
        using var dist = vae.Encode(r.Read("vae.encode_in").to(device));
        UNetParityTests.AssertClose(output, $"{reference} vae.encode_mean", dist.Mean, r.Read("vae.encode_mean"), r.Tol);
        UNetParityTests.AssertClose(output, $"{reference} vae.encode_logvar", dist.LogVar, r.Read("vae.encode_logvar"), r.Tol);
    }
}
