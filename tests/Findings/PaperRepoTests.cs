using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// On the paper's own files, only where LENS_PAPER_REPO points at a clone of github.com/tokeron/DiffusionLens (its data
/// has no licence, so it is never committed here). The figures are the paper's annotation counts as this project's
/// issue 9 states them.
/// </summary>
public class PaperRepoTests
{
    private static string RequireRepo()
    {
        var dir = Environment.GetEnvironmentVariable("LENS_PAPER_REPO");
        if (string.IsNullOrEmpty(dir)) Assert.Skip("LENS_PAPER_REPO is not set (a clone of github.com/tokeron/DiffusionLens; its data is not committed here)");
        if (!Directory.Exists(Path.Combine(dir, "human_annotations"))) Assert.Skip($"LENS_PAPER_REPO={dir} has no human_annotations folder");
        return dir;
    }

    private static string One(string dir, string pattern)
    {
        var files = Directory.GetFiles(Path.Combine(dir, "human_annotations"), pattern);
        Assert.True(files.Length == 1, $"expected one file matching {pattern} in {dir}/human_annotations, found {files.Length}");
        return files[0];
    }

    [Theory]
    [InlineData("sd", 68, 39, 41, 0, 148)]
    [InlineData("df", 54, 60, 34, 0, 148)]
    public void Syntax_head_order_counts_are_the_published_ones(string model, int first, int second, int ties, int neither, int pairs)
    {
        var dir = RequireRepo();
        var r = HumanOrder.Compare(AnnotationFile.Load(One(dir, $"syntax_head_IsFirstClass_{model}_*.csv")),
            AnnotationFile.Load(One(dir, $"syntax_head_IsSecondClass_{model}_*.csv")));
        Assert.Equal((first, second, ties, neither, pairs), (r.Counts.FirstBeforeSecond, r.Counts.SecondBeforeFirst, r.Counts.Ties, r.Counts.Neither, r.Counts.Pairs));
        Assert.Equal(37, r.PairList.Select(p => p.Prompt).Distinct().Count());
    }

    [Fact]
    public void The_prompt_set_and_its_annotations_load()
    {
        var dir = RequireRepo();
        var prompts = PromptSetFile.Load(Path.Combine(dir, "prompts", "syntactic_ralations_coco - Sheet1.csv"));
        var ann = AnnotationFile.Load(One(dir, "syntax_head_IsFirstClass_sd_*.csv"));
        Assert.Equal(PaperCsv.SdIndices, ann.Indices);
        Assert.All(ann.Rows, r => Assert.Contains(prompts, p => p.Prompt == r.Prompt));
        Assert.Equal(PaperCsv.IfIndices, AnnotationFile.Load(One(dir, "syntax_head_IsFirstClass_df_*.csv")).Indices);
    }
}

/// <summary>fixtures/claims/paper-scale-claims.json: valid, and its prompt sets resolve against a clone of the paper's repository.</summary>
public class PaperScaleClaimsTests
{
    [Fact]
    public void Paper_scale_claims_load_and_cite_the_annotation_counts()
    {
        var f = ClaimsFile.Load(Repo.PathOf("fixtures", "claims", "paper-scale-claims.json"));
        Assert.All(f.Claims, c => Assert.Equal("LENS_PAPER_REPO", c.PromptSet!.RootEnv));
        Assert.All(f.Claims, c => Assert.All(c.Layers.Layers!, l => Assert.Contains(HiddenStateMapping.HiddenStateIndex(l), c.Model == "sd" ? PaperCsv.SdIndices : PaperCsv.IfIndices)));
        var dir = Environment.GetEnvironmentVariable("LENS_PAPER_REPO");
        if (string.IsNullOrEmpty(dir)) Assert.Skip("LENS_PAPER_REPO is not set (a clone of github.com/tokeron/DiffusionLens)");
        foreach (var c in f.Claims)
        {
            var (data, why) = PromptSetData.Resolve(c.PromptSet!, f.Folder, Environment.GetEnvironmentVariable);
            Assert.Null(why);
            Assert.Equal(37, data!.Prompts.Count);
            var human = HumanOrder.Compare(data.First!, data.Second!).Counts;
            var published = c.Published.Single(p => p.Kind == "order_counts");
            Assert.Equal((published.FirstBeforeSecond, published.SecondBeforeFirst), (human.FirstBeforeSecond, human.SecondBeforeFirst));
        }
    }
}
