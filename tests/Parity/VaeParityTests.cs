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

    internal static AutoencoderKL LoadVae(string folder)
    {
        var vae = AutoencoderKL.FromConfig(DiffusersConfig.Load(Path.Combine(folder, "config.json")));
        StrictLoader.Load(vae, WeightSet.FromFolder(folder), "vae");
        vae.eval();
        return vae;
    }

    [Theory]
    [MemberData(nameof(References))]
    public void Decode_MatchesDiffusers(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var _ = torch.no_grad();
        using var scope = NewDisposeScope();
        using var vae = LoadVae(r.Component("vae"));
        var actual = vae.Decode(r.Read("vae.decode_in"));
        UNetParityTests.AssertClose(output, $"{reference} vae.decode_out", actual, r.Read("vae.decode_out"));
    }

    [Theory]
    [MemberData(nameof(References))]
    public void Encode_MatchesDiffusers(string reference)
    {
        using var r = ReferenceData.Open(reference);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var _ = torch.no_grad();
        using var scope = NewDisposeScope();
        using var vae = LoadVae(r.Component("vae"));
        using var dist = vae.Encode(r.Read("vae.encode_in"));
        UNetParityTests.AssertClose(output, $"{reference} vae.encode_mean", dist.Mean, r.Read("vae.encode_mean"));
        UNetParityTests.AssertClose(output, $"{reference} vae.encode_logvar", dist.LogVar, r.Read("vae.encode_logvar"));
    }
}
