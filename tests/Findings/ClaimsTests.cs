using DiffusionLens.Findings;

namespace DiffusionLens.Tests.Findings;

public class ClaimsTests
{
    private static ClaimsFile Paper() => ClaimsFile.Load(Repo.PathOf("fixtures", "claims", "paper-claims.json"));

    private static IEnumerable<(Claim Claim, PublishedFigure Figure)> Figures(ClaimsFile f, string kind) =>
        f.Claims.SelectMany(c => c.Published.Where(p => p.Kind == kind).Select(p => (c, p)));

    [Fact]
    public void Paper_claims_file_loads_and_validates()
    {
        var f = Paper();
        Assert.Equal(ClaimsFile.FormatName, f.Format);
        Assert.True(f.Claims.Count >= 4);
        var a = f.BaseAnalysis;
        Assert.Equal(PresenceMetric.Prob, a.Metric);
        Assert.Equal(EmergenceRule.Stay, a.Rule);
        Assert.InRange(a.Threshold, 0.01, 1.0);
        Assert.All(f.Claims.Where(c => c.Model != "flux"), c => Assert.Equal(new[] { "people", "ocean" }, c.Concepts.Take(2)));
    }

    [Fact]
    public void Sdxl_claim_expects_the_ocean_first_with_the_tutorial_lens()
    {
        // the tutorial's BONUS SDXL cell: seed 17, 40 steps, text_encoder_2 layers range(0, 31, 2); its observation: the
        // ocean first, then the people, unlike SD 1.5's CLIP (the second concept first)
        var c = Paper().Claims.Single(c => c.Model == "sdxl");
        Assert.Equal("stabilityai/stable-diffusion-xl-base-1.0", c.ModelName);
        Assert.Equal(new[] { "A few people are in the ocean splashing around" }, c.Prompts);
        Assert.Equal(new[] { "people", "ocean" }, c.Concepts.Take(2));
        Assert.Equal(new[] { 17L }, c.Seeds);
        Assert.Equal(40, c.Steps);
        Assert.Equal(Enumerable.Range(0, 16).Select(i => 2 * i), c.Layers.Layers!);
        Assert.Equal(ConceptOrder.Second, c.ExpectedOrder);
        Assert.Equal(ConceptOrder.First, Paper().Claims.Single(x => x.Id == "sd15-tutorial-people-first").ExpectedOrder);
        var text = Assert.Single(c.Published, p => p.Kind == "text" && p.Source == "tutorial");
        Assert.Contains("SDXL starts by making the ocean, then the people", text.Text);
        Assert.False(string.IsNullOrEmpty(c.ModelEnv)); // skipped, naming it, where the weights are absent
    }

    [Fact]
    public void Flux_claim_states_the_tutorial_observation_in_its_setting()
    {
        // the nnsight tutorial's BONUS FLUX cell: its prompt, seed 17, 1 step, guidance 0, 512x512, T5 blocks range(0, 23, 2);
        // its observation: the snowy landscape first, the penguins last (T5 in reverse order), so the second concept is
        // expected first
        var c = Paper().Claims.Single(c => c.Model == "flux");
        Assert.Equal("black-forest-labs/FLUX.1-schnell", c.ModelName);
        Assert.Equal(new[] { "Penguin playing chess at a wooden table in a snowy landscape." }, c.Prompts);
        Assert.Equal((1, 0.0, 512, 512), (c.Steps!.Value, c.Guidance!.Value, c.Height!.Value, c.Width!.Value));
        Assert.Equal(Enumerable.Range(0, 12).Select(i => 2 * i), c.Layers.Layers!);
        Assert.Equal(new[] { "a penguin", "a snowy landscape" }, c.Concepts.Take(2));
        Assert.Equal(ConceptOrder.Second, c.ExpectedOrder);
        var text = Assert.Single(c.Published, p => p.Kind == "text" && p.Source == "tutorial");
        Assert.Contains("snowy landscape first", text.Text);
        Assert.Contains("reverse order", text.Text);
        Assert.False(string.IsNullOrEmpty(c.ModelEnv)); // skipped, naming it, where the weights are absent
    }

    [Fact]
    public void Order_counts_match_the_published_annotation_figures()
    {
        var f = Paper();
        var sd = Figures(f, "order_counts").Where(x => x.Claim.Model == "sd").Select(x => x.Figure).ToList();
        var fl = Figures(f, "order_counts").Where(x => x.Claim.Model == "if").Select(x => x.Figure).ToList();
        Assert.NotEmpty(sd);
        Assert.NotEmpty(fl);
        Assert.All(sd, p =>
        {
            Assert.Equal("SD 2.1", p.Model);
            Assert.Equal((68, 39), (p.FirstBeforeSecond!.Value, p.SecondBeforeFirst!.Value));
            Assert.Equal(4, p.SeedsPerPrompt);
            Assert.Equal("annotations", p.Source);
        });
        Assert.All(fl, p =>
        {
            Assert.Equal("IF-I-XL", p.Model);
            Assert.Equal((54, 60), (p.FirstBeforeSecond!.Value, p.SecondBeforeFirst!.Value));
            Assert.Equal(4, p.SeedsPerPrompt);
        });
    }

    [Fact]
    public void Expected_order_agrees_with_the_figures_each_claim_cites()
    {
        foreach (var (c, p) in Figures(Paper(), "order_counts"))
        {
            var published = p.FirstBeforeSecond > p.SecondBeforeFirst ? ConceptOrder.First : ConceptOrder.Second;
            Assert.True(published == c.ExpectedOrder, $"{c.Id}: expects {c.ExpectedOrder} but cites {p.Describe()}");
        }
        foreach (var (c, p) in Figures(Paper(), "prompt_seeds"))
        {
            Assert.Contains(p.Prompt!, c.Prompts);
            var idx = c.Concepts.ToList().IndexOf(p.Concept!);
            Assert.True(idx is 0 or 1, $"{c.Id}: cited concept {p.Concept} is not one of the ordered pair");
            Assert.Equal(idx == 0 ? ConceptOrder.First : ConceptOrder.Second, c.ExpectedOrder);
            Assert.Equal(4, p.OfSeeds);
            Assert.True(p.Seeds * 2 > p.OfSeeds, $"{c.Id}: cited figure {p.Seeds}/{p.OfSeeds} is not a majority");
        }
    }

    [Fact]
    public void Per_prompt_figures_are_the_published_ones()
    {
        var f = Paper();
        var ps = Figures(f, "prompt_seeds").Select(x => x.Figure).ToList();
        const string prompt = "A few people are in the ocean splashing around";
        Assert.Contains(ps, p => p is { Model: "IF-I-XL", Concept: "ocean", Seeds: 4, OfSeeds: 4, HiddenStateIndex: 8, Prompt: prompt });
        Assert.Contains(ps, p => p is { Model: "SD 2.1", Concept: "people", Seeds: 3, OfSeeds: 4, HiddenStateIndex: 7, Prompt: prompt });
        Assert.DoesNotContain(ps, p => p.Model == "SD 2.1" && p.Concept == "ocean");
    }

    [Fact]
    public void Four_seed_claims_have_four_seeds_and_tutorial_claims_the_tutorial_settings()
    {
        var f = Paper();
        foreach (var c in f.Claims.Where(c => c.Published.Any(p => p.Kind == "prompt_seeds") && c.Id.Contains("four-seeds")))
            Assert.Equal(4, c.Seeds.Count);
        var sd = f.Claims.Single(c => c.Id == "sd15-tutorial-people-first");
        Assert.Equal(new long[] { 17 }, sd.Seeds);
        Assert.True(sd.Layers.IsAll);
        Assert.Equal("LENS_SD15_DIR", sd.ModelEnv);
        Assert.Equal(ConceptOrder.First, sd.ExpectedOrder);
        var fl = f.Claims.Single(c => c.Id == "if-tutorial-ocean-first");
        Assert.Equal(new long[] { 128998123 }, fl.Seeds);
        Assert.Equal(Enumerable.Range(0, 12).Select(i => 2 * i), fl.Layers.Layers!);
        Assert.Equal("LENS_IFIL_DIR", fl.ModelEnv);
        Assert.Equal(ConceptOrder.Second, fl.ExpectedOrder);
        Assert.All(f.Claims, c => Assert.Contains(c.Published.Select(p => p.Source), s => f.Sources.ContainsKey(s)));
    }

    [Fact]
    public void Tiny_claims_file_points_at_the_embedded_models_and_judge()
    {
        var f = ClaimsFile.Load(Repo.PathOf("fixtures", "claims", "tiny-claims.json"));
        Assert.Equal(Path.GetFullPath(Repo.PathOf("fixtures", "judge", "tiny-clip")), Path.GetFullPath(Path.Combine(f.Folder, f.Defaults.JudgeDir!)));
        var dirs = f.Claims.Select(c => Path.GetFullPath(Path.Combine(f.Folder, c.ModelDir!))).ToList();
        Assert.Contains(Path.GetFullPath(Repo.PathOf("fixtures", "models", "sd-tiny-12")), dirs);
        Assert.Contains(Path.GetFullPath(Repo.PathOf("fixtures", "models", "if-tiny-a")), dirs);
        Assert.Equal(new[] { "sd", "if" }, f.Claims.Select(c => c.Model).Distinct().OrderByDescending(m => m));
    }

    [Fact]
    public void Model_folder_comes_from_the_environment_variable_first()
    {
        using var tmp = new TempDir();
        var f = Paper();
        var c = f.Claims[0];
        var (dir, reason) = f.ResolveModelDir(c, _ => null);
        Assert.Null(dir);
        Assert.Contains(c.ModelEnv!, reason);
        (dir, _) = f.ResolveModelDir(c, name => name == c.ModelEnv ? tmp.Path : null);
        Assert.Equal(tmp.Path, dir);
        (dir, reason) = f.ResolveModelDir(c, _ => tmp.Sub("nope"));
        Assert.Null(dir);
        Assert.Contains("not a folder", reason);
    }

    [Theory]
    [InlineData("\"format\": \"lens-claims/1\"", "\"format\": \"other\"", "format must be")]
    [InlineData("\"model\": \"sd\"", "\"model\": \"xl\"", "model must be")]
    [InlineData("\"expected_order\": \"first\"", "\"expected_order\": \"neither\"", "expected_order")]
    [InlineData("\"seeds\": [1, 2]", "\"seeds\": []", "no seeds")]
    [InlineData("\"concepts\": [\"people\", \"ocean\"]", "\"concepts\": [\"people\"]", "two concepts")]
    [InlineData("\"threshold\": 0.5", "\"threshold\": 2", "threshold")]
    [InlineData("\"layers\": \"all\"", "\"layers\": \"most\"", "layers")]
    [InlineData("\"steps\": 2", "\"stepz\": 2", "stepz")]
    [InlineData("\"source\": \"plumbing\"", "\"source\": \"nowhere\"", "unknown source")]
    public void Malformed_claims_files_are_rejected_with_a_clear_message(string from, string to, string expected)
    {
        using var tmp = new TempDir();
        var text = File.ReadAllText(Repo.PathOf("fixtures", "claims", "tiny-claims.json"));
        Assert.Contains(from, text);
        var idx = text.IndexOf(from, StringComparison.Ordinal);
        var bad = text[..idx] + to + text[(idx + from.Length)..];
        var path = tmp.Sub("claims.json");
        File.WriteAllText(path, bad);
        var e = Assert.Throws<LensException>(() => ClaimsFile.Load(path));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Layer_selection_forms()
    {
        Assert.Equal(new[] { 0, 2, 4 }, LayerSelection.Range(0, 4, 2).Layers!);
        var json = "{\"layers\": [1, 3, 5]}";
        var r = System.Text.Json.JsonSerializer.Deserialize<Holder>(json, DiffusionLens.Judge.FindingsJson.Options)!;
        Assert.Equal(new[] { 1, 3, 5 }, r.Layers.Layers!);
        Assert.Equal("[\n  1,\n  3,\n  5\n]", System.Text.Json.JsonSerializer.Serialize(r.Layers, DiffusionLens.Judge.FindingsJson.Options).Replace("\r", ""));
        Assert.Throws<System.Text.Json.JsonException>(() => System.Text.Json.JsonSerializer.Deserialize<Holder>("{\"layers\": [3, 1]}", DiffusionLens.Judge.FindingsJson.Options));
    }

    internal sealed record Holder { public LayerSelection Layers { get; init; } = LayerSelection.All; }
}
