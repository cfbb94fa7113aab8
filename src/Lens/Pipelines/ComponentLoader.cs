using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// Builds diffusers components from their folders (config.json + strict safetensors load). The modules are built
/// directly on the target device in the target dtype with uninitialised parameters (<see cref="Layers.ForLoading"/>),
/// then every parameter is filled from the checkpoint (<see cref="StrictLoader"/>, which rejects any missing key).
/// </summary>
internal static class ComponentLoader
{
    public static UNet2DConditionModel LoadUNet(string dir, Device device, ScalarType dtype, string? variant = null)
    {
        var unet = BuildUNet(dir, device, dtype);
        StrictLoader.Load(unet, WeightSet.FromFolder(dir, variant), "unet");
        unet.eval();
        return unet;
    }

    /// <summary>The UNet of a component folder built from its config.json, parameters uninitialised (on the meta
    /// device: shapes only, no memory), before any weights are read.</summary>
    public static UNet2DConditionModel BuildUNet(string dir, Device device, ScalarType dtype)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        UNet2DConditionModel unet;
        using (Layers.ForLoading(device, dtype)) unet = UNet2DConditionModel.FromConfig(cfg);
        Layers.CheckMaterialised(unet, device, "unet");
        return unet;
    }

    /// <summary>The VAE of a component folder built from its config.json, parameters uninitialised (see <see cref="BuildUNet"/>).</summary>
    public static AutoencoderKL BuildVae(string dir, Device device, ScalarType dtype)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        AutoencoderKL vae;
        using (Layers.ForLoading(device, dtype)) vae = AutoencoderKL.FromConfig(cfg);
        Layers.CheckMaterialised(vae, device, "vae");
        return vae;
    }

    public static AutoencoderKL LoadVae(string dir, Device device, ScalarType dtype, string? variant = null)
    {
        var vae = BuildVae(dir, device, dtype);
        // diffusers converts the old VAE attention names (query/key/value/proj_attn) when it loads such checkpoints
        var legacyPaths = vae.DeprecatedAttentionPaths().Select(p => p + ".").ToArray();
        string? Legacy(string key)
        {
            var path = legacyPaths.FirstOrDefault(key.StartsWith);
            if (path is null) return null;
            var rest = key[path.Length..];
            foreach (var (old, now) in Attention.DeprecatedKeyRenames)
                if (rest.StartsWith(now + ".")) return path + old + rest[now.Length..];
            return null;
        }
        StrictLoader.Load(vae, WeightSet.FromFolder(dir, variant), "vae", legacyKeyFor: Legacy);
        vae.eval();
        return vae;
    }
}
