using DiffusionLens.Loading;
using DiffusionLens.Pipelines;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Cli.Commands;

internal sealed class EncodeCommand : ICommand
{
    public string Name => "encode";
    public string Summary => "write the token ids and every layer's hidden state and lens embedding to safetensors";
    public string Usage => """
        lens encode --prompt TEXT --out FILE.safetensors [--model DIR|ORG/NAME [--revision REV]] [--device cpu|cuda] [--dtype float32] [--variant NAME] [--clean-caption BOOL] [--overwrite]

        Writes input_ids [1,T] int64, attention_mask [1,T] int64 (IF), and for every layer L: hidden.L (output of
        encoder layer L, before the final norm) and lens.L (after it), float32. The encoder is the one the pipeline's
        lens reads: text_encoder (SD, IF) or text_encoder_2 (SDXL's OpenCLIP bigG, FLUX's T5 with its tokenizer_2 and
        max_sequence_length 512); the file's metadata names it.
        """;

    public int Run(IReadOnlyList<string> args)
    {
        var a = CliArgs.Parse(Name, args, new[] { "model", "revision", "prompt", "out", "device", "dtype", "variant", "clean-caption" }, new[] { "overwrite" });
        var prompt = a.Require("prompt");
        var outPath = Path.GetFullPath(a.Require("out"));
        var dir = Path.GetDirectoryName(outPath)!;
        if (!Directory.Exists(dir)) throw new LensException($"output folder does not exist: {dir}");
        if (Directory.Exists(outPath)) throw new LensException($"--out {outPath} is a folder; give a file name ending in .safetensors");
        if (File.Exists(outPath))
        {
            if (!a.Flag("overwrite")) throw new LensException($"--out {outPath} already exists; pass --overwrite to replace it");
            if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new LensException($"--overwrite replaces only a .safetensors file; {outPath} is not one");
        }
        var modelDir = ModelDefaults.Resolve(a.Get("model"), a.Get("revision"), variant: a.Get("variant"));
        Console.Error.WriteLine($"loading {modelDir} ({a.Get("dtype", "float32")} on {a.Get("device", "cpu")}) ...");
        // the tokenizer and text encoder only: the UNet's and VAE's weights are never read
        using var pipe = PromptEncoder.Load(modelDir, a.Get("device", "cpu"), a.Get("dtype", "float32"), a.Get("variant"));
        pipe.Tokenizer.Warn = m => Console.Error.WriteLine(m);
        bool? clean = a.Has("clean-caption") ? a.Bool("clean-caption", true) : null;
        using var scope = NewDisposeScope();
        using var layers = pipe.EncodeLayers(prompt, clean);
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("input_ids", torch.tensor(layers.InputIds, dtype: ScalarType.Int64).unsqueeze(0)),
        };
        if (pipe.Kind == "if" && layers.AttentionMask is not null)
            tensors.Add(new("attention_mask", torch.tensor(layers.AttentionMask, dtype: ScalarType.Int64).unsqueeze(0)));
        for (int l = 0; l < layers.Hidden.Count; l++)
        {
            tensors.Add(new($"hidden.{l}", layers.Hidden[l].to(ScalarType.Float32).cpu()));
            tensors.Add(new($"lens.{l}", pipe.Lens(layers.Hidden[l]).to(ScalarType.Float32).cpu()));
        }
        var tmp = outPath + $".partial-{Environment.ProcessId}";
        Interrupt.RegisterPartial(tmp);
        try
        {
            SafetensorsFile.Write(tmp, tensors, new Dictionary<string, string>
            {
                ["prompt"] = prompt, ["processed_prompt"] = layers.Text, ["model"] = pipe.ModelDir,
                ["encoder"] = pipe.Component,
            });
            File.Move(tmp, outPath, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
            Interrupt.Unregister(tmp);
        }
        Console.WriteLine($"wrote input_ids and {layers.Hidden.Count} layers (hidden.L, lens.L) to {outPath}");
        return 0;
    }
}
