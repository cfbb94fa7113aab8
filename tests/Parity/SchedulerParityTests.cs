using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// DPMSolverMultistepScheduler, DDIMScheduler and EulerDiscreteScheduler against real diffusers, from
/// fixtures/references-schedulers/ (schedulers.json + tensors.safetensors, written by
/// <c>python fixtures/make_reference.py schedulers</c> on the CPU in float32). Each case builds the scheduler from a model's
/// scheduler config as <c>SchedulerClass.from_config(pipe.scheduler.config)</c> and checks: the timesteps (exactly), the
/// sigmas (float32, within 1e-6 relative, a few float32 ulps: the same float32 ops and numpy's float64 interpolation; rescale_betas_zero_snr's sqrt/cumprod chain rounds 3 ulps apart), init_noise_sigma
/// (1e-6 relative), the effective config, and a teacher-forced rollout: every step fed diffusers' sample and model output,
/// its scale_model_input output and prev_sample compared at float32 precision (rel L2 at most 1e-6, max abs at most
/// 1e-5 of the reference's largest magnitude, at least 1e-5). sde-dpmsolver++ draws its noise from a CPU generator
/// seeded as diffusers' was.
/// </summary>
public class SchedulerParityTests
{
    public static string Folder => Path.Combine(ReferenceData.RepoRoot, "fixtures", "references-schedulers");
    private static string JsonPath => Path.Combine(Folder, "schedulers.json");

    private const double RelL2Tol = 1e-6;
    private const double MaxAbsTol = 1e-5;
    private const double SigmaRelTol = 1e-6;

    private readonly ITestOutputHelper _out;
    public SchedulerParityTests(ITestOutputHelper output) => _out = output;

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        if (!File.Exists(JsonPath)) { data.Add("(not recorded)"); return data; }
        foreach (var c in JsonNode.Parse(File.ReadAllText(JsonPath))!["cases"]!.AsArray())
            data.Add(c!["name"]!.GetValue<string>());
        return data;
    }

    private static string SkipReason =>
        $"{Folder} is not recorded yet: run `PYTHONPATH=<diffusers>/src python fixtures/make_reference.py schedulers` with real diffusers (CPU float32) and commit fixtures/references-schedulers/";

    [Theory, MemberData(nameof(Cases))]
    public void MatchesDiffusers(string name)
    {
        if (!File.Exists(JsonPath)) Assert.Skip(SkipReason);
        var root = JsonNode.Parse(File.ReadAllText(JsonPath))!;
        var c = root["cases"]!.AsArray().Single(x => x!["name"]!.GetValue<string>() == name)!;
        var tensors = new SafetensorsFile(Path.Combine(Folder, root["tensors"]!.GetValue<string>()));
        var config = new DiffusersConfig(c["config"]!.AsObject().DeepClone().AsObject(), $"{name} config");
        var cls = c["scheduler"]!.GetValue<string>();
        int steps = c["steps"]!.GetValue<int>();

        using var scope = NewDisposeScope();
        using var s = Scheduler.FromConfig(config, cls);
        Assert.Equal(cls, s.ClassName);
        s.SetTimesteps(steps);

        // timesteps: exactly diffusers' (float32 values for Euler)
        var expectedT = c["timesteps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        Assert.Equal(expectedT, s.TimestepValues);
        Assert.Equal(expectedT.Length, s.Timesteps.Length);
        Assert.Equal(c["timesteps_dtype"]!.GetValue<string>() == "torch.float32" ? ScalarType.Float32 : ScalarType.Int64, s.TimestepDType);

        // sigmas, init_noise_sigma
        if (c["has_sigmas"]!.GetValue<bool>())
        {
            var sigmas = s switch
            {
                DPMSolverMultistepScheduler d => d.Sigmas!,
                EulerDiscreteScheduler e => e.Sigmas,
                _ => throw new InvalidOperationException($"{cls} has no sigmas but diffusers recorded them"),
            };
            var expected = tensors.Read($"{name}.sigmas");
            Assert.Equal(expected.shape, sigmas.shape);
            var a = sigmas.data<float>().ToArray();
            var want = expected.data<float>().ToArray();
            for (int i = 0; i < a.Length; i++)
                Assert.True(Math.Abs(a[i] - want[i]) <= SigmaRelTol * Math.Abs(want[i]), $"sigma[{i}]: {a[i]:R} vs diffusers {want[i]:R}");
        }
        double initSigma = c["init_noise_sigma"]!.GetValue<double>();
        Assert.True(Math.Abs(s.InitNoiseSigma - initSigma) <= 1e-6 * initSigma, $"init_noise_sigma {s.InitNoiseSigma:R} vs diffusers {initSigma:R}");

        CheckEffectiveConfig(s, c["effective_config"]!.AsObject(), c["config"]!.AsObject());

        // teacher-forced rollout
        var x = tensors.Read($"{name}.x_T");
        var modelOutputs = tensors.Read($"{name}.model_output");
        var prevSamples = tensors.Read($"{name}.prev_sample");
        Tensor? scaledInputs = c["has_scaled_input"]!.GetValue<bool>() ? tensors.Read($"{name}.scaled_input") : null;
        Assert.Equal(s.Timesteps.Length, (int)prevSamples.shape[0]);
        var generator = new Generator((ulong)(c["seed"]!.GetValue<long>() + 1));
        double worst = 0;
        for (int i = 0; i < s.Timesteps.Length; i++)
        {
            long t = s.Timesteps[i];
            var scaled = s.ScaleModelInput(x, t);
            if (scaledInputs is null) Assert.True(ReferenceData.Identical(scaled, x), $"step {i}: scale_model_input must return the sample unchanged");
            else worst = Math.Max(worst, AssertClose($"{name} step {i} scale_model_input", scaled, scaledInputs[i]));
            var prev = s.Step(modelOutputs[i], t, x, generator);
            worst = Math.Max(worst, AssertClose($"{name} step {i} (t={s.TimestepValues[i]}) prev_sample", prev, prevSamples[i]));
            x = prevSamples[i];
        }
        _out.WriteLine($"{name}: {s.Timesteps.Length} steps, worst rel L2 {worst:E2}");
    }

    private static double AssertClose(string what, Tensor actual, Tensor expected)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(expected.dtype, actual.dtype);
        // degenerate configs (epsilon prediction at zero terminal SNR) give infinities in diffusers: the same
        // non-finite values in the same places, and the finite rest compared as usual
        using var expectedFinite = torch.isfinite(expected);
        if (!expectedFinite.all().item<bool>())
        {
            static bool Same(Tensor a, Tensor b) => a.eq(b).all().item<bool>();
            bool same = Same(actual.isposinf(), expected.isposinf()) && Same(actual.isneginf(), expected.isneginf())
                && Same(actual.isnan(), expected.isnan());
            Assert.True(same, $"{what}: non-finite values differ from diffusers' (inf/nan positions)");
            actual = torch.where(expectedFinite, actual, torch.zeros_like(actual));
            expected = torch.where(expectedFinite, expected, torch.zeros_like(expected));
        }
        var (maxAbs, refMaxAbs, rel) = ReferenceData.Compare(actual, expected);
        Assert.True(rel <= RelL2Tol && maxAbs <= MaxAbsTol * Math.Max(1, refMaxAbs),
            $"{what}: rel L2 {rel:E2} (tolerance {RelL2Tol:E0}), max abs {maxAbs:E2} (reference max {refMaxAbs:E2})");
        return rel;
    }

    /// <summary>A JSON number as a double, whatever CLR type the node holds (int, long, double).</summary>
    private static double Number(JsonNode n) => double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Every key of the C# effective config has diffusers' value; every key of diffusers' config is either one of the
    /// C# keys or a key of the source file that the class does not take (diffusers keeps those as hidden config).
    /// </summary>
    internal static void CheckEffectiveConfig(Scheduler s, JsonObject diffusers, JsonObject file)
    {
        foreach (var (key, value) in s.EffectiveConfig)
        {
            Assert.True(diffusers.ContainsKey(key), $"{s.ClassName}: C# reads '{key}', which diffusers' config does not have");
            var d = diffusers[key];
            if (value is null || d is null) { Assert.True(value is null && d is null, $"'{key}': C# {value?.ToJsonString() ?? "null"} vs diffusers {d?.ToJsonString() ?? "null"}"); continue; }
            if (value.GetValueKind() == System.Text.Json.JsonValueKind.Number && d.GetValueKind() == System.Text.Json.JsonValueKind.Number)
                Assert.True(Math.Abs(Number(value) - Number(d)) <= 1e-12 * Math.Abs(Number(d)), $"'{key}': C# {value} vs diffusers {d}");
            else
                Assert.True(JsonNode.DeepEquals(value, d), $"'{key}': C# {value.ToJsonString()} vs diffusers {d.ToJsonString()}");
        }
        foreach (var key in diffusers.Select(kv => kv.Key))
            Assert.True(s.EffectiveConfig.ContainsKey(key) || file.ContainsKey(key),
                $"{s.ClassName}: diffusers' config has '{key}' = {diffusers[key]?.ToJsonString() ?? "null"}, which the C# scheduler does not read");
    }
}
