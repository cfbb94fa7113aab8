using DiffusionLens.Loading;
using DiffusionLens.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>Builds diffusers components from their folders (config.json + strict safetensors load).</summary>
public static class ComponentLoader
{
    public static UNet2DConditionModel LoadUNet(string dir, Device device, ScalarType dtype)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        var unet = UNet2DConditionModel.FromConfig(cfg);
        StrictLoader.Load(unet, WeightSet.FromFolder(dir), "unet");
        unet.eval();
        return unet.to(dtype).to(device);
    }

    public static AutoencoderKL LoadVae(string dir, Device device, ScalarType dtype)
    {
        var cfg = DiffusersConfig.Load(Path.Combine(dir, "config.json"));
        var vae = AutoencoderKL.FromConfig(cfg);
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
        StrictLoader.Load(vae, WeightSet.FromFolder(dir), "vae", legacyKeyFor: Legacy);
        vae.eval();
        return vae.to(dtype).to(device);
    }
}
