using System.Text.Json.Nodes;
using DiffusionLens.Cli;
using DiffusionLens.Loading;
using DiffusionLens.Models;
using Xunit;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// A config value the C# code does not implement (and would otherwise ignore or misread) is an error that names the
/// file, the field and the value, and the CLI exits with the bad-input code: tested on a temp copy of sd-tiny-12 with
/// one field changed.
/// </summary>
public class UnsupportedConfigTests
{
    [Theory]
    [InlineData("unet", "down_block_types", """["CrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]""", "'down_block_types'[1] = KCrossAttnDownBlock2D")]
    [InlineData("unet", "up_block_types", """["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "AttnUpBlock2D"]""", "'up_block_types'[3] = AttnUpBlock2D")]
    [InlineData("unet", "mid_block_type", "\"UNetMidBlockFlat\"", "'mid_block_type' = UNetMidBlockFlat")]
    [InlineData("unet", "act_fn", "\"tanh\"", "'act_fn' = tanh")]
    [InlineData("unet", "resnet_time_scale_shift", "\"spatial\"", "'resnet_time_scale_shift' = spatial")]
    [InlineData("unet", "cross_attention_norm", "\"rms_norm\"", "'cross_attention_norm' = rms_norm")]
    [InlineData("unet", "time_embedding_type", "\"fourier\"", "'time_embedding_type' = fourier")]
    [InlineData("unet", "class_embed_type", "\"projection\"", "'class_embed_type' = projection")]
    [InlineData("unet", "addition_embed_type", "\"image\"", "'addition_embed_type' = image")]
    [InlineData("unet", "attention_type", "\"gated\"", "'attention_type' = gated")]
    [InlineData("vae", "up_block_types", """["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]""", "'up_block_types'[1] = AttnUpDecoderBlock2D")]
    [InlineData("vae", "act_fn", "\"tanh\"", "'act_fn' = tanh")]
    [InlineData("text_encoder", "hidden_act", "\"swiglu\"", "'hidden_act' = swiglu")]
    [InlineData("scheduler", "timestep_spacing", "\"karras\"", "'timestep_spacing' = karras")]
    [InlineData("scheduler", "prediction_type", "\"sample\"", "'prediction_type' = sample")]
    public void UnsupportedValueIsAnErrorNamingFileFieldAndValue(string component, string field, string json, string expected)
    {
        var model = CliRunner.CopyModel("sd-tiny-12");
        try
        {
            var file = Directory.GetFiles(Path.Combine(model, component), "*.json").Single();
            var node = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
            node[field] = JsonNode.Parse(json);
            File.WriteAllText(file, node.ToJsonString());
            var outDir = CliRunner.TempPath("unsupported-config");
            var r = CliRunner.Run("sweep", "--model", model, "--prompt", "x", "--layers", "0", "--steps", "1", "--out", outDir, "--quiet");
            Assert.Equal(ExitCodes.Usage, r.ExitCode);
            Assert.Contains(file, r.Stderr);
            Assert.Contains(expected, r.Stderr);
            Assert.Contains("is not supported", r.Stderr);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(model, true); }
    }

    [Fact]
    public void SupportedValuesAndLegacyNamesStillLoad()
    {
        var path = Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-12", "unet", "config.json");
        var node = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        node["act_fn"] = "SiLU";  // diffusers lowercases activation names
        node["down_block_types"] = JsonNode.Parse("""["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "UNetResDownBlock2D"]""");
        node["cross_attention_norm"] = null;
        using var unet = UNet2DConditionModel.FromConfig(DiffusersConfig.FromJson(node.ToJsonString(), path));
        Assert.NotNull(unet);
    }

    [Theory]
    [InlineData("""{"feed_forward_proj": "gated-swiglu"}""", "'feed_forward_proj' = gated-swiglu")]
    [InlineData("""{"feed_forward_proj": "gated-gelu", "dense_act_fn": "geglu"}""", "'dense_act_fn' = geglu")]
    public void T5ActivationIsNamedWithItsField(string json, string expected)
    {
        var e = Assert.Throws<LensException>(() => DiffusionLens.TextEncoders.T5Config.FromConfig(DiffusersConfig.FromJson(json, "/x/text_encoder/config.json")));
        Assert.StartsWith("/x/text_encoder/config.json: " + expected + " is not supported", e.Message);
    }

    [Fact]
    public void RequireSupportedNamesTheListEntry()
    {
        var cfg = DiffusersConfig.FromJson("""{"types": ["A", "B"], "one": "c", "none": null}""", "/x/config.json");
        cfg.RequireSupported("types", ["A", "B"]);
        cfg.RequireSupported("none", ["A"]);
        cfg.RequireSupported("absent", ["A"]);
        cfg.RequireSupported("one", ["C"], ignoreCase: true);
        var e = Assert.Throws<LensException>(() => cfg.RequireSupported("types", ["A"]));
        Assert.Equal("/x/config.json: 'types'[1] = B is not supported (supported: A)", e.Message);
    }
}
