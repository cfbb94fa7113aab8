using DiffusionLens.Pipelines;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// AutoencoderKL against real diffusers, for every Stable Diffusion reference whose model exists: vae.decode(z).sample
/// (z unscaled) and encode(x).latent_dist mean / logvar, on the reference's device and dtype (weights stored in any
/// dtype are converted on load). Tolerance: <see cref="ReferenceData.AssertMatches"/>, as <see cref="UNetParityTests"/>.
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
        output.WriteLine(r.RanOn);
        r.AssertMatches("vae.decode_out", actual, output);
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
        output.WriteLine(r.RanOn);
        r.AssertMatches("vae.encode_mean", dist.Mean, output);
        r.AssertMatches("vae.encode_logvar", dist.LogVar, output);
    }
}
