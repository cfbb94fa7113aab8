using System.Text.Json.Nodes;
using DiffusionLens.Pipelines;

namespace DiffusionLens.Cli.Commands;

internal sealed class TokenizeCommand : ICommand
{
    public string Name => "tokenize";
    public string Summary => "print the prompt's token ids as the pipeline tokenizes it (JSON)";
    public string Usage => """
        lens tokenize --prompt TEXT [--model DIR|ORG/NAME [--revision REV]] [--clean-caption BOOL]

        Prints {"input_ids": [...]} (and "attention_mask" for models that use one, i.e. IF), padded/truncated as
        the diffusers pipeline does.
        """;

    public int Run(IReadOnlyList<string> args)
    {
        var a = CliArgs.Parse(Name, args, new[] { "model", "revision", "prompt", "clean-caption" });
        var prompt = a.Require("prompt");
        bool? clean = a.Has("clean-caption") ? a.Bool("clean-caption", true) : null;
        var tok = PromptTokenizer.Load(ModelDefaults.Resolve(a.Get("model"), a.Get("revision")));
        var (ids, mask, text) = tok.Tokenize(prompt, clean);
        var json = new JsonObject { ["input_ids"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray()) };
        if (tok.UsesAttentionMask) json["attention_mask"] = new JsonArray(mask.Select(i => (JsonNode)i).ToArray());
        if (text != prompt) json["processed_prompt"] = text;
        Console.WriteLine(json.ToJsonString());
        return 0;
    }
}
