using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>Random-weight diffusers folders written by the tests (SDXL, FLUX): seeded components and copied tokenizers.</summary>
internal static class RandomFolder
{
    /// <summary>
    /// Sets every parameter of <paramref name="m"/> to seeded normal noise times <paramref name="scale"/> and writes it
    /// as <paramref name="componentDir"/>/<paramref name="file"/> beside its config.json.
    /// </summary>
    public static void Component(nn.Module m, int seed, double scale, string componentDir, string file, string config)
    {
        using (torch.no_grad())
        {
            torch.manual_seed(seed);
            foreach (var (_, p) in m.named_parameters()) p.copy_(torch.randn_like(p) * scale);
        }
        Directory.CreateDirectory(componentDir);
        File.WriteAllText(Path.Combine(componentDir, "config.json"), config);
        SafetensorsFile.Write(Path.Combine(componentDir, file), m.state_dict().ToList());
    }

    /// <summary>Copies the files of <paramref name="src"/> (a tokenizer folder) into <paramref name="dst"/>.</summary>
    public static void CopyDir(string src, string dst)
    {
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
    }
}
