using System.Text.Json.Nodes;
using DiffusionLens.Cli;
using DiffusionLens.Cli.Commands;
using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>`lens human-order` and the readers of the paper's CSV formats, on synthetic files in that format.</summary>
public class HumanOrderTests
{
    private const string Comma = "A slim, modern fridge is next to some \"clean\", sleek cabinets.";

    /// <summary>
    /// Per (prompt, seed): the index from which each noun is labelled present (null never) and the expected order by
    /// the rule (earlier first; only one appears: it is first; equal: tie; none: neither).
    /// </summary>
    private static readonly (string Prompt, long Seed, int? First, int? Second, ConceptOrder Expected)[] Cases =
    {
        ("Many different colorful flowers are on a table.", 0, 7, 11, ConceptOrder.First),
        ("Many different colorful flowers are on a table.", 1, 11, 7, ConceptOrder.Second),
        ("Many different colorful flowers are on a table.", 2, 15, 15, ConceptOrder.Simultaneous),
        (Comma, 0, null, 19, ConceptOrder.Second),
        (Comma, 1, 3, null, ConceptOrder.First),
        (Comma, 2, null, null, ConceptOrder.Neither),
        (Comma, 3, 3, 23, ConceptOrder.First),
    };

    private static (string First, string Second) WriteCases(TempDir tmp, string newline = "\n", bool bom = false,
        IEnumerable<(string, long, int?, int?, ConceptOrder)>? cases = null)
    {
        var c = (cases ?? Cases).ToList();
        var first = tmp.Sub("syntax_IsFirstClass_sd.csv");
        var second = tmp.Sub("syntax_IsSecondClass_sd.csv");
        // blank (unannotated) cells: index 23 in the first file's rows, which never decides an order above
        PaperCsv.WriteAnnotations(first, PaperCsv.SdIndices, c.Select(x => PaperCsv.Row(x.Item1, x.Item2, PaperCsv.SdIndices, x.Item3, x.Item3 == 23 ? Array.Empty<int>() : new[] { 23 })), newline, bom);
        // the second file lists its rows in another order: matching is by (prompt, seed), not by position
        PaperCsv.WriteAnnotations(second, PaperCsv.SdIndices, c.AsEnumerable().Reverse().Select(x => PaperCsv.Row(x.Item1, x.Item2, PaperCsv.SdIndices, x.Item4)), newline, bom);
        return (first, second);
    }

    [Theory]
    [InlineData("\n", false)]
    [InlineData("\r\n", true)]
    public void Counts_follow_the_rule_with_quotes_blanks_bom_and_crlf(string newline, bool bom)
    {
        using var tmp = new TempDir();
        var (f, s) = WriteCases(tmp, newline, bom);
        var result = HumanOrder.Compare(AnnotationFile.Load(f), AnnotationFile.Load(s));
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.First), result.Counts.FirstBeforeSecond);
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Second), result.Counts.SecondBeforeFirst);
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Simultaneous), result.Counts.Ties);
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Neither), result.Counts.Neither);
        Assert.Equal(Cases.Length, result.Counts.Pairs);
        foreach (var c in Cases)
        {
            var p = result.PairList.Single(x => x.Prompt == c.Prompt && x.Seed == c.Seed);
            Assert.Equal((c.First, c.Second, c.Expected), (p.FirstNounIndex, p.SecondNounIndex, p.Order));
        }
        Assert.Contains(result.PairList, p => p.Prompt == Comma); // the quoted prompt kept its commas and quotes
    }

    [Fact]
    public void The_command_prints_the_counts_as_json()
    {
        using var tmp = new TempDir();
        var (f, s) = WriteCases(tmp);
        var json = JsonNode.Parse(HumanOrderCommand.Json(HumanOrder.Compare(AnnotationFile.Load(f), AnnotationFile.Load(s)), pairs: true))!;
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.First), json["first_before_second"]!.GetValue<int>());
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Second), json["second_before_first"]!.GetValue<int>());
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Simultaneous), json["ties"]!.GetValue<int>());
        Assert.Equal(Cases.Count(c => c.Expected == ConceptOrder.Neither), json["neither"]!.GetValue<int>());
        Assert.Equal(Cases.Length, json["pairs"]!.GetValue<int>());
        Assert.Equal(Cases.Length, json["pair_list"]!.AsArray().Count);
        Assert.Equal(0, new HumanOrderCommand().Run(new[] { "--first", f, "--second", s }));
    }

    [Fact]
    public void A_row_without_its_partner_is_an_error_naming_it()
    {
        using var tmp = new TempDir();
        var (f, _) = WriteCases(tmp);
        var partial = tmp.Sub("partial.csv");
        PaperCsv.WriteAnnotations(partial, PaperCsv.SdIndices, Cases.Skip(1).Select(x => PaperCsv.Row(x.Prompt, x.Seed, PaperCsv.SdIndices, x.Second)));
        var e = Assert.Throws<LensException>(() => HumanOrder.Compare(AnnotationFile.Load(f), AnnotationFile.Load(partial)));
        Assert.Contains(Cases[0].Prompt, e.Message);
        Assert.Contains($"seed {Cases[0].Seed}", e.Message);
        Assert.Contains("partial.csv", e.Message);
        var e2 = Assert.Throws<LensException>(() => HumanOrder.Compare(AnnotationFile.Load(partial), AnnotationFile.Load(f)));
        Assert.Contains(Cases[0].Prompt, e2.Message);

        var err = new StringWriter();
        Assert.Equal(ExitCodes.Usage, Program.Run(new HumanOrderCommand(), new[] { "--first", f, "--second", partial }, err));
        Assert.StartsWith("lens human-order: error: ", err.ToString());
        Assert.Single(err.ToString().Trim().Split('\n'));
    }

    [Theory]
    [InlineData("prompt,3,7,seed\np,1,2,0\n", "must be 1, 0 or empty")]
    [InlineData("prompt,3,7,seed\np,1,0,x\n", "is not an integer")]
    [InlineData("prompt,7,3,seed\np,1,0,0\n", "must increase")]
    [InlineData("prompt,a,seed\np,1,0\n", "not a hidden-state index")]
    [InlineData("text,3,seed\np,1,0\n", "columns prompt")]
    [InlineData("prompt,3,seed\np,1\n", "2 fields but the header has 3")]
    [InlineData("prompt,3,seed\n\"p,1,0\n", "not closed")]
    [InlineData("prompt,3,seed\np,1,0\np,0,0\n", "listed twice")]
    public void Malformed_annotation_files_name_the_problem(string text, string expected)
    {
        using var tmp = new TempDir();
        var path = tmp.Sub("a.csv");
        File.WriteAllText(path, text);
        var e = Assert.Throws<LensException>(() => AnnotationFile.Load(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Prompt_files_give_the_two_nouns_in_order()
    {
        using var tmp = new TempDir();
        var path = tmp.Sub("prompts.csv");
        PaperCsv.WritePrompts(path, new[] { ("Many different colorful flowers are on a table.", "flowers", "table"), (Comma, "fridge", "cabinets") }, "\r\n", bom: true);
        var set = PromptSetFile.Load(path);
        Assert.Equal(new[] { "Many different colorful flowers are on a table.", Comma }, set.Select(p => p.Prompt));
        Assert.Equal(new[] { "fridge", "cabinets" }, set[1].Concepts);
        Assert.Equal("cabinets", set[1].Head);

        File.WriteAllText(path, "prompt,noun_0\np,a\n");
        Assert.Contains("no column 'noun_1'", Assert.Throws<LensException>(() => PromptSetFile.Load(path)).Message);
        File.WriteAllText(path, "prompt,noun_0,noun_1\np,a,a\n");
        Assert.Contains("both 'a'", Assert.Throws<LensException>(() => PromptSetFile.Load(path)).Message);
    }
}
