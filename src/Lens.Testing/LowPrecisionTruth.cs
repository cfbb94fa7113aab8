using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Testing;

/// <summary>
/// How a float16/bfloat16 result is judged, so that a verdict holds on any GPU (the criterion of FlashAttention's own
/// tests): both the port's and diffusers' low-precision results are compared with a float32 truth, and the port passes
/// when its error is at most <see cref="Factor"/> times diffusers' own error plus a floor:
/// <code>err(port vs truth) &lt;= Factor * err(diffusers vs truth) + floor</code>
/// for the relative L2 error (floor <see cref="FloorRel"/>) and for the max |diff| (floor <see cref="FloorAbs"/> x
/// max(1, max|truth|)). A bit tolerance recorded on one GPU fails on another (cuBLAS/cuDNN pick other kernels per GPU
/// model); an error ratio against the truth does not, since both sides round at the same precision.
///
/// Written by fixtures/make_reference.py (add_truth): reference.json "low_precision" names the truth reference (the CPU
/// float32 reference of the same model and settings, hardware-independent to about 1e-6) and records diffusers' error
/// for every stage ("diffusers_error"), together with the GPU, driver, CUDA, cuDNN and torch versions it ran with.
/// Teacher-forced steps are fed the low-precision run's own inputs, so their truth (truth.step_pred, truth.step_out) is
/// diffusers' float32 pipeline on those inputs, stored with the reference. Diffusers draws the initial noise (and IF's
/// variance noise) in the pipeline's dtype, and a float16 draw is not a rounded float32 draw: the truth of the first UNet
/// call and of every image is float32 made from the low-precision run's own draws (truth_for_float16.* in the truth
/// reference, shared by every GPU's recording since the CPU generator draws the same everywhere).
/// </summary>
public sealed class LowPrecisionTruth
{
    /// <summary>The port may be this many times less accurate than diffusers at the same precision.</summary>
    public const double Factor = 2.0;
    /// <summary>Relative L2 floor: about two float16 roundings (2^-10).</summary>
    public const double FloorRel = 1e-3;
    /// <summary>Max |diff| floor, times max(1, max|truth|).</summary>
    public const double FloorAbs = 1e-3;

    private readonly ReferenceData _ref;
    private readonly JsonObject _errors;
    private readonly SafetensorsFile _truth;
    /// <summary>The folder name of the float32 truth reference (a sibling of this reference's folder).</summary>
    public string TruthReference { get; }

    /// <summary>Reads the criterion's data of a float16/bfloat16 reference (its "low_precision" entry and the truth reference).</summary>
    public LowPrecisionTruth(ReferenceData reference)
    {
        _ref = reference;
        var lp = reference.Json["low_precision"]?.AsObject()
            ?? throw new InvalidOperationException($"{reference.Name} is a {reference.DType} reference without \"low_precision\" " +
                $"(diffusers' error against a float32 truth): add it with `make_reference.py truth {reference.Folder}` on a CUDA host");
        _errors = lp["diffusers_error"]!.AsObject();
        TruthReference = lp["truth_reference"]!.GetValue<string>();
        // the truth reference is a sibling folder of the low-precision one
        var truthDir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(reference.Folder))!, TruthReference);
        var truthJson = JsonNode.Parse(File.ReadAllText(Path.Combine(truthDir, "reference.json")))!;
        _truth = new SafetensorsFile(Path.Combine(truthDir, truthJson["tensors"]?.GetValue<string>() ?? "tensors.safetensors"));
        _sameNoisePrefix = $"truth_for_{reference.DType}.";
        // the same-noise truth must have been made from this reference's own draws (the CPU generator's, on any GPU)
        var init = reference.Has("init_latents") ? "init_latents" : "init_images";
        if (_truth.Entries.ContainsKey(_sameNoisePrefix + init))
        {
            using var a = _truth.Read(_sameNoisePrefix + init);
            using var b = reference.Read(init);
            if (!ReferenceData.Identical(a, b))
                throw new InvalidOperationException($"{reference.Name}: {TruthReference}'s {_sameNoisePrefix}* truth was made from other initial noise");
        }
    }

    private readonly string _sameNoisePrefix;

    /// <summary>Diffusers' recorded low-precision error of a stage: (rel L2, max |diff|) against the truth.</summary>
    public (double RelL2, double MaxAbs) DiffusersError(string key)
    {
        var e = _errors[key]?.AsObject() ?? throw new InvalidOperationException($"{_ref.Name}: no diffusers_error recorded for '{key}'");
        return (e["rel_l2"]!.GetValue<double>(), e["max_abs"]!.GetValue<double>());
    }

    /// <summary>
    /// The float32 truth of a stage: "step_pred.i" / "step_out.i" from this reference's truth tensors; stages that depend
    /// on the random draws (the first UNet call, the images) from the truth reference's "truth_for_&lt;dtype&gt;.&lt;key&gt;",
    /// float32 made from the low-precision run's own noise; any other key from the truth reference.
    /// </summary>
    public Tensor Truth(string key)
    {
        foreach (var (prefix, stacked) in new[] { ("step_pred.", "truth.step_pred"), ("step_out.", "truth.step_out") })
            if (key.StartsWith(prefix, StringComparison.Ordinal))
            {
                using var all = _ref.Read(stacked);
                return all[long.Parse(key[prefix.Length..])].clone();
            }
        return _truth.Entries.ContainsKey(_sameNoisePrefix + key) ? _truth.Read(_sameNoisePrefix + key) : _truth.Read(key);
    }

    /// <summary>Asserts the criterion for one stage; returns the port's relative L2 error against the truth.</summary>
    public double AssertWithinCriterion(string key, Tensor actual, ITestOutputHelper? log = null)
    {
        using var truth = Truth(key);
        var (maxAbs, truthMax, rel) = ReferenceData.Compare(actual.cpu(), truth);
        var (dRel, dAbs) = DiffusersError(key);
        double allowedRel = Factor * dRel + FloorRel;
        double allowedAbs = Factor * dAbs + FloorAbs * Math.Max(1, truthMax);
        log?.WriteLine($"{_ref.Name} {key}: vs float32 truth rel L2 {rel:E2} (diffusers {dRel:E2}, allowed {allowedRel:E2}), " +
                       $"max |diff| {maxAbs:E2} (diffusers {dAbs:E2}, allowed {allowedAbs:E2})");
        Assert.True(rel <= allowedRel && maxAbs <= allowedAbs,
            $"{_ref.Name} {key}: the port's {_ref.DType} error against the float32 truth ({TruthReference}) is rel L2 {rel:E2} / " +
            $"max |diff| {maxAbs:E2}; diffusers' own is {dRel:E2} / {dAbs:E2}; allowed {Factor} x diffusers + floor = {allowedRel:E2} / {allowedAbs:E2}");
        return rel;
    }
}
