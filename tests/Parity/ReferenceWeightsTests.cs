using System.Text.Json.Nodes;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// A reference is compared only against the weights it was recorded from: reference.json's model.weights_sha256 is
/// checked against the model folder when a test first asks for it (<see cref="ReferenceData.ModelPath"/>).
/// </summary>
public class ReferenceWeightsTests
{
    public static TheoryData<string> CommittedReferences()
    {
        var data = new TheoryData<string>();
        foreach (var root in new[] { "references", "references-guidance" })
        {
            var dir = Path.Combine(ReferenceData.RepoRoot, "fixtures", root);
            foreach (var f in Directory.GetFiles(dir, "reference.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
                data.Add(Path.GetRelativePath(ReferenceData.RepoRoot, Path.GetDirectoryName(f)!));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(CommittedReferences))]
    public void CommittedReferenceMatchesItsModelFolder(string folder)
    {
        // directly (not through ReferenceData, which skips CUDA references on a machine without CUDA): the hashes do
        // not depend on the device
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(ReferenceData.RepoRoot, folder, "reference.json")))!.AsObject();
        var model = json["model"]!;
        var path = model["path"]?.GetValue<string>();
        if (path is null || !File.Exists(Path.Combine(ReferenceData.RepoRoot, path, "model_index.json")))
            Assert.Skip($"{folder}: its model folder is not in this repository ({path ?? "no model.path"})");
        ReferenceWeights.Verify(folder, json["kind"]!.GetValue<string>(), Path.Combine(ReferenceData.RepoRoot, path),
            model["weights_sha256"]?.AsObject(), model["variant"]?.GetValue<string>());
    }

    [Theory]
    [InlineData("sd-tiny-12", "unet/diffusion_pytorch_model.safetensors")]
    [InlineData("sd-tiny-12", "vae/diffusion_pytorch_model.safetensors")]
    [InlineData("if-tiny-a", "text_encoder/model.fp16-00002-of-00002.safetensors")]
    public void ModifiedWeightsFileIsRefusedByName(string reference, string weightsFile)
    {
        var (refDir, model) = ReferenceOnCopy(reference);
        try
        {
            // one byte of the last tensor's data changed: same size, same header, other weights
            var path = Path.Combine(model, weightsFile);
            var bytes = File.ReadAllBytes(path);
            bytes[^1] ^= 0x01;
            File.WriteAllBytes(path, bytes);
            var r = ReferenceData.OpenFolder(refDir);
            Assert.Null(r.SkipReason);
            var e = Assert.Throws<InvalidOperationException>(() => r.ModelPath);
            Assert.Contains($"reference recorded from different weights: {weightsFile}", e.Message);
        }
        finally { Cleanup(refDir, model); }
    }

    [Fact]
    public void UntouchedCopyPasses()
    {
        var (refDir, model) = ReferenceOnCopy("if-tiny-a");
        try
        {
            var r = ReferenceData.OpenFolder(refDir);
            Assert.Equal(model, r.ModelPath);
        }
        finally { Cleanup(refDir, model); }
    }

    [Fact]
    public void ReferenceWithoutHashesIsRefused()
    {
        var (refDir, model) = ReferenceOnCopy("sd-tiny-b", json => json["model"]!.AsObject().Remove("weights_sha256"));
        try
        {
            var e = Assert.Throws<InvalidOperationException>(() => ReferenceData.OpenFolder(refDir).ModelPath);
            Assert.Contains("records no model.weights_sha256", e.Message);
        }
        finally { Cleanup(refDir, model); }
    }

    [Fact]
    public void WeightsFileTheReferenceDoesNotListIsRefused()
    {
        // reference.json lists another file than the one the loader reads: the folder is not what was recorded from
        var (refDir, model) = ReferenceOnCopy("sd-tiny-12", json =>
        {
            var te = json["model"]!["weights_sha256"]!["text_encoder"]!.AsObject();
            te.Remove("text_encoder/model.safetensors");
            te["text_encoder/other.safetensors"] = new string('0', 64);
        });
        try
        {
            var e = Assert.Throws<InvalidOperationException>(() => ReferenceData.OpenFolder(refDir).ModelPath);
            Assert.Contains("reference recorded from different weights: text_encoder loads [text_encoder/model.safetensors]", e.Message);
        }
        finally { Cleanup(refDir, model); }
    }

    /// <summary>A copy of a committed tiny model and a reference folder whose reference.json (optionally edited) points at it.</summary>
    private static (string RefDir, string Model) ReferenceOnCopy(string reference, Action<JsonObject>? edit = null)
    {
        var src = Path.Combine(ReferenceData.ReferencesDir, reference);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "reference.json")))!.AsObject();
        var model = CliRunner.CopyModel(Path.GetFileName(json["model"]!["path"]!.GetValue<string>()));
        json["model"]!["path"] = model;
        edit?.Invoke(json);
        var refDir = CliRunner.TempPath("ref-" + reference);
        Directory.CreateDirectory(refDir);
        File.WriteAllText(Path.Combine(refDir, "reference.json"), json.ToJsonString());
        return (refDir, model);
    }

    private static void Cleanup(params string[] dirs)
    {
        foreach (var d in dirs) if (Directory.Exists(d)) Directory.Delete(d, true);
    }
}
