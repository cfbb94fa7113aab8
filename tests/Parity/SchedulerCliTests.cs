using System.Text.Json.Nodes;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary><c>lens sweep --scheduler</c> end to end on the tiny SD model (fixtures/models/sd-tiny-12).</summary>
public class SchedulerCliTests
{
    private static string TinySd => Path.Combine(ReferenceData.RepoRoot, "fixtures", "models", "sd-tiny-12");

    private static CliRunner.Result Sweep(string outDir, params string[] extra) =>
        CliRunner.Run(new[] { "sweep", "--model", TinySd, "--prompt", "a cat", "--steps", "3", "--layers", "0,11", "--quiet", "--out", outDir }
            .Concat(extra).ToArray());

    [Theory]
    [InlineData("ddim", "DDIMScheduler")]
    [InlineData("euler", "EulerDiscreteScheduler")]
    [InlineData("dpm++", "DPMSolverMultistepScheduler")]
    [InlineData("DDPMScheduler", "DDPMScheduler")]
    public void Each_scheduler_runs_end_to_end_and_is_recorded_in_the_manifest(string name, string cls)
    {
        var outDir = CliRunner.TempPath("sched");
        try
        {
            var r = Sweep(outDir, "--scheduler", name);
            Assert.True(r.ExitCode == 0, r.Stderr);
            var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
            Assert.Equal(cls, m["scheduler"]!.GetValue<string>());
            Assert.Equal(3, m["unet_calls_per_image"]!.GetValue<int>()); // one UNet call a step (PNDM's extra call is PNDM's)
            var cfg = m["scheduler_config"]!.AsObject();
            Assert.Equal("scaled_linear", cfg["beta_schedule"]!.GetValue<string>()); // from the model's file
            Assert.Equal(1, cfg["steps_offset"]!.GetValue<int>());
            Assert.False(cfg.ContainsKey("skip_prk_steps")); // a PNDM key the class does not take
            if (cls == "DPMSolverMultistepScheduler") Assert.Equal(2, cfg["solver_order"]!.GetValue<int>());
            Assert.True(File.Exists(Path.Combine(outDir, "layer-00.png")) && File.Exists(Path.Combine(outDir, "layer-11.png")));
        }
        finally { if (Directory.Exists(outDir)) Directory.Delete(outDir, true); }
    }

    [Theory]
    [InlineData("PNDMScheduler")]
    [InlineData("pndm")]
    public void The_models_own_scheduler_by_name_gives_bit_identical_images(string name)
    {
        var plain = CliRunner.TempPath("sched-plain");
        var named = CliRunner.TempPath("sched-named");
        var other = CliRunner.TempPath("sched-other");
        try
        {
            var a = Sweep(plain);
            var b = Sweep(named, "--scheduler", name);
            var c = Sweep(other, "--scheduler", "ddim");
            Assert.True(a.ExitCode == 0 && b.ExitCode == 0 && c.ExitCode == 0, a.Stderr + b.Stderr + c.Stderr);
            foreach (var f in new[] { "layer-00.png", "layer-11.png", "grid.png" })
            {
                Assert.Equal(File.ReadAllBytes(Path.Combine(plain, f)), File.ReadAllBytes(Path.Combine(named, f)));
            }
            // and the test can tell schedulers apart
            Assert.NotEqual(File.ReadAllBytes(Path.Combine(plain, "layer-11.png")), File.ReadAllBytes(Path.Combine(other, "layer-11.png")));
            var ma = JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "manifest.json")))!;
            var mb = JsonNode.Parse(File.ReadAllText(Path.Combine(named, "manifest.json")))!;
            Assert.Equal("PNDMScheduler", ma["scheduler"]!.GetValue<string>());
            Assert.True(JsonNode.DeepEquals(ma["scheduler_config"], mb["scheduler_config"]));
            Assert.True(ma["scheduler_config"]!["skip_prk_steps"]!.GetValue<bool>());
        }
        finally
        {
            foreach (var d in new[] { plain, named, other }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    /// <summary>A copy of a model whose weights files are all garbage: any error that is not about them came first.</summary>
    private static string ModelWithCorruptWeights(string name)
    {
        var dir = CliRunner.CopyModel(name);
        foreach (var f in Directory.GetFiles(dir, "*.safetensors", SearchOption.AllDirectories))
            File.WriteAllBytes(f, new byte[] { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3 });
        return dir;
    }

    [Fact]
    public void An_unknown_scheduler_is_a_usage_error_listing_the_names_before_anything_loads()
    {
        var dir = ModelWithCorruptWeights("sd-tiny-12");
        var outDir = CliRunner.TempPath("sched-bad");
        try
        {
            var r = CliRunner.Run("sweep", "--model", dir, "--prompt", "a cat", "--scheduler", "lms", "--out", outDir);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("unknown scheduler 'lms'", r.Stderr);
            foreach (var n in new[] { "DPMSolverMultistepScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "PNDMScheduler", "DDPMScheduler", "dpm++", "ddim", "euler", "pndm", "ddpm" })
                Assert.Contains(n, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
            Assert.DoesNotContain("loading", r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
            Assert.Single(r.Stderr.Trim().Split('\n'), l => l.Contains("lms"));
            Assert.False(Directory.Exists(outDir));

            // also with a model that does not exist: the name is checked first
            var r2 = CliRunner.Run("sweep", "--model", dir + "-missing", "--prompt", "a cat", "--scheduler", "lms", "--out", outDir);
            Assert.Equal(2, r2.ExitCode);
            Assert.Contains("unknown scheduler 'lms'", r2.Stderr);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("sd-tiny-12", new[] { "--scheduler", "dpm++" }, "use_karras_sigmas", "\"use_karras_sigmas\": true")]
    [InlineData("if-tiny-a", new[] { "--scheduler", "ddim", "--variant", "fp16" }, "variance_type", null)]
    [InlineData("if-tiny-a", new[] { "--scheduler", "euler", "--variant", "fp16" }, "variance_type", null)]
    public void A_scheduler_the_model_cannot_run_fails_before_weights_are_read(string model, string[] extra, string expected, string? configEdit)
    {
        var dir = ModelWithCorruptWeights(model);
        try
        {
            if (configEdit is not null)
            {
                var path = Path.Combine(dir, "scheduler", "scheduler_config.json");
                var json = File.ReadAllText(path).TrimEnd().TrimEnd('}') + ", " + configEdit + "}";
                File.WriteAllText(path, json);
            }
            var args = new List<string> { "sweep", "--model", dir, "--prompt", "a cat", "--out", CliRunner.TempPath("sched-refuse") };
            args.AddRange(extra);
            var r = CliRunner.Run(args.ToArray());
            Assert.Equal(2, r.ExitCode);
            Assert.Contains(expected, r.Stderr);
            Assert.DoesNotContain("safetensors", r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr);
        }
        finally { Directory.Delete(dir, true); }
    }
}
