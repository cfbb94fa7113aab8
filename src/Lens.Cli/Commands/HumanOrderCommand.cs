using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusionLens.Findings;
using DiffusionLens.Judge;

namespace DiffusionLens.Cli.Commands;

/// <summary><c>lens human-order</c>: which noun the paper's annotators saw first, from two annotation files.</summary>
internal sealed class HumanOrderCommand : ICommand
{
    public string Name => "human-order";
    public string Summary => "order counts of the paper's human annotations (first noun vs second noun files)";
    public string Usage => @"usage: lens human-order --first FILE --second FILE [--pairs]

FILE: a human annotation file of the paper's repository (human_annotations/*.csv, columns
prompt,<hidden-state indices...>,seed; cells 1 present, 0 absent, empty unannotated), --first for the first noun
(e.g. *IsFirstClass*), --second for the second (*IsSecondClass*). Rows are matched by (prompt, seed); a row without
its partner is an error naming it. Per pair, the first annotated hidden-state index labelled 1 for each noun decides:
the earlier noun appeared first, equal indices are a tie, a noun never labelled 1 loses to one that is (the noun that
appears counts as first to appear), and 'neither' means neither noun was ever labelled 1.

Prints JSON: first_before_second, second_before_first, ties, neither, pairs (and the files and the rule);
--pairs adds every pair's indices and order.";

    public int Run(IReadOnlyList<string> args)
    {
        var a = CliArgs.Parse(Name, args, new[] { "first", "second" }, new[] { "pairs" });
        var first = AnnotationFile.Load(a.Require("first"));
        var second = AnnotationFile.Load(a.Require("second"));
        Console.WriteLine(Json(HumanOrder.Compare(first, second), a.Flag("pairs")));
        return ExitCodes.Ok;
    }

    /// <summary>The command's output: the four counts, the number of pairs, the files and the rule (and the pairs).</summary>
    public static string Json(HumanOrder result, bool pairs)
    {
        var o = new JsonObject
        {
            ["first_before_second"] = result.Counts.FirstBeforeSecond,
            ["second_before_first"] = result.Counts.SecondBeforeFirst,
            ["ties"] = result.Counts.Ties,
            ["neither"] = result.Counts.Neither,
            ["pairs"] = result.Counts.Pairs,
            ["first_file"] = result.FirstFile,
            ["second_file"] = result.SecondFile,
            ["rule"] = result.Rule,
        };
        if (pairs) o["pair_list"] = JsonSerializer.SerializeToNode(result.PairList, FindingsJson.Options);
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
