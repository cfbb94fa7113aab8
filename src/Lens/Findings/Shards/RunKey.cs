using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace DiffusionLens.Findings;

/// <summary>
/// The key of a run's result: the SHA-256 of a canonical JSON of its inputs (claim id, model kind and weights hash,
/// variant, dtype, device kind (cpu/cuda, not the index), UNet batch, prompt, negative prompt, concepts, distractors,
/// judge template and identity, seed, layers, steps, guidance, size, caption cleaning; a stage II's weights hash and
/// settings when the claim has one). The analysis settings are not
/// part of it: emergence is recomputed from the stored scores.
/// </summary>
internal static class RunKey
{
    public static string Inputs(Claim claim, string template, string modelHash, string? variant, string dtype, string device, int batch,
        string prompt, IReadOnlyList<string> concepts, long seed, string judge, string? stage2ModelHash = null)
    {
        var o = new SortedDictionary<string, object?>(StringComparer.Ordinal)
        {
            ["claim"] = claim.Id,
            ["model"] = claim.Model,
            ["model_hash"] = modelHash,
            ["variant"] = variant,
            ["dtype"] = dtype,
            ["device"] = DeviceKind(device),
            ["batch"] = batch,
            ["prompt"] = prompt,
            ["negative_prompt"] = claim.NegativePrompt,
            ["concepts"] = concepts,
            ["distractors"] = claim.Distractors,
            ["template"] = template,
            ["judge"] = judge,
            ["seed"] = seed,
            ["layers"] = claim.Layers.ToString(),
            ["steps"] = claim.Steps,
            ["guidance"] = claim.Guidance?.ToString("R", CultureInfo.InvariantCulture),
            ["height"] = claim.Height,
            ["width"] = claim.Width,
            ["clean_caption"] = claim.CleanCaption,
        };
        // added later: present only when set, so the keys of runs recorded before them stay the same
        if (claim.Scheduler is not null) o["scheduler"] = Schedulers.Scheduler.ResolveClassName(claim.Scheduler);
        if (claim.SeedPolicy is not null and not "reseed") o["seed_policy"] = claim.SeedPolicy;
        if (stage2ModelHash is not null)
        {
            o["stage2_model_hash"] = stage2ModelHash;
            o["stage2_steps"] = claim.Stage2Steps;
            o["stage2_guidance"] = claim.Stage2Guidance?.ToString("R", CultureInfo.InvariantCulture);
            o["stage2_noise_level"] = claim.Stage2NoiseLevel;
            // added later: present only when set, so the keys of runs recorded before it stay the same
            if (claim.Stage2Scheduler is not null) o["stage2_scheduler"] = Schedulers.Scheduler.ResolveClassName(claim.Stage2Scheduler);
        }
        return JsonSerializer.Serialize(o);
    }

    public static string Hash(string inputs) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(inputs)));

    /// <summary>"cuda:1" -> "cuda", "cpu" -> "cpu".</summary>
    public static string DeviceKind(string device) => device.Split(':')[0].Trim().ToLowerInvariant();
}
