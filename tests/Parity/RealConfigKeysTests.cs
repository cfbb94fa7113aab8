using System.Text.Json.Nodes;
using DiffusionLens.Loading;
using DiffusionLens.Pipelines;
using DiffusionLens.Schedulers;
using DiffusionLens.TextEncoders;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// The published configurations of real pipelines (fixtures/real-configs/&lt;pipeline&gt;/, no weights): each weighted
/// component is built FROM ITS CONFIG by the loader's own builders (<see cref="ComponentLoader.BuildUNet"/>,
/// <see cref="ComponentLoader.BuildVae"/>, <see cref="ClipTextModel.Build"/>, <see cref="T5EncoderModel.Build"/>) on
/// the meta device (shapes only, no memory), and its state-dict keys and shapes must equal, key for key, the ones the
/// real diffusers / transformers classes give for the same config (&lt;component&gt;/keys.json, written by
/// <c>fixtures/make_reference.py keys</c> on a host with diffusers; skipped until it is committed).
/// </summary>
public class RealConfigKeysTests
{
    public static string ConfigsRoot => Path.Combine(ReferenceData.RepoRoot, "fixtures", "real-configs");

    /// <summary>(pipeline folder, component) for every weighted component of every real config; a pipeline folder
    /// without model_index.json (its configs were not found) is listed with component "" and skipped.</summary>
    public static TheoryData<string, string> Components()
    {
        var data = new TheoryData<string, string>();
        foreach (var dir in Directory.GetDirectories(ConfigsRoot).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(dir);
            if (!File.Exists(Path.Combine(dir, "model_index.json"))) { data.Add(name, ""); continue; }
            foreach (var c in ReferenceWeights.Components(Kind(dir))) data.Add(name, c);
        }
        return data;
    }

    private static string Kind(string pipelineDir) =>
        ModelIndex.Load(pipelineDir).ClassName == "IFPipeline" ? "if" : "sd";

    private static string PipelineDir(string pipeline, string component)
    {
        var dir = Path.Combine(ConfigsRoot, pipeline);
        if (component == "")
            Assert.Skip($"fixtures/real-configs/{pipeline} holds no model_index.json: its published configs were not found (see its README.md)");
        return dir;
    }

    /// <summary>Builds one component from its config exactly as the loader does, on the meta device.</summary>
    private static nn.Module Build(string pipelineDir, string component)
    {
        var dir = Path.Combine(pipelineDir, component);
        var meta = new Device(DeviceType.META);
        return component switch
        {
            "unet" => ComponentLoader.BuildUNet(dir, meta, ScalarType.Float16),
            "vae" => ComponentLoader.BuildVae(dir, meta, ScalarType.Float16),
            "text_encoder" => ModelIndex.Load(pipelineDir).ClassName == "IFPipeline"
                ? T5EncoderModel.Build(dir, meta, ScalarType.Float16)
                : ClipTextModel.Build(dir, meta, ScalarType.Float16),
            _ => throw new ArgumentException($"not a weighted component: {component}"),
        };
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void BuildsFromTheRealConfigWithoutMemory(string pipeline, string component)
    {
        var dir = PipelineDir(pipeline, component);
        // an option the C# code does not implement is an error naming the file, field and value (UnsupportedConfigTests),
        // so building is the check that every option of the real config is supported
        using var module = Build(dir, component);
        var parameters = module.named_parameters().ToList();
        Assert.NotEmpty(parameters);
        foreach (var (name, p) in parameters)
            Assert.True(p.device_type == DeviceType.META, $"{pipeline}/{component}: {name} was built on {p.device_type}, not on the meta device");
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void StateDictKeysAndShapesEqualDiffusers(string pipeline, string component)
    {
        var dir = PipelineDir(pipeline, component);
        var keysFile = Path.Combine(dir, component, "keys.json");
        if (!File.Exists(keysFile))
            Assert.Skip($"fixtures/real-configs/{pipeline}/{component}/keys.json is not committed yet (written by `python fixtures/make_reference.py keys` on a host with diffusers)");
        var json = JsonNode.Parse(File.ReadAllText(keysFile))!.AsObject();
        var expected = json["keys"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(x => x!.GetValue<long>()).ToArray(), StringComparer.Ordinal);
        using var module = Build(dir, component);
        var actual = module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape, StringComparer.Ordinal);
        expected = CheckpointKeys.Normalise(expected, actual, component);

        var missing = expected.Keys.Where(k => !actual.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var extra = actual.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var badShape = expected.Where(kv => actual.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key}: diffusers [{string.Join(",", kv.Value)}] vs C# [{string.Join(",", actual[kv.Key])}]").Order(StringComparer.Ordinal).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0 && badShape.Count == 0,
            $"{pipeline}/{component} vs {json["source"]}: {missing.Count} key(s) the C# module lacks: {Preview(missing)}; " +
            $"{extra.Count} key(s) only the C# module has: {Preview(extra)}; {badShape.Count} shape mismatch(es): {Preview(badShape)}");
    }

    public static TheoryData<string> Pipelines()
    {
        var data = new TheoryData<string>();
        foreach (var dir in Directory.GetDirectories(ConfigsRoot).Order(StringComparer.Ordinal)) data.Add(Path.GetFileName(dir));
        return data;
    }

    [Theory]
    [MemberData(nameof(Pipelines))]
    public void SchedulerConfigIsSupported(string pipeline)
    {
        var file = Path.Combine(ConfigsRoot, pipeline, "scheduler", "scheduler_config.json");
        if (!File.Exists(file)) Assert.Skip($"fixtures/real-configs/{pipeline} holds no scheduler config: it was not found (see its README.md)");
        // an unsupported scheduler option (timestep_spacing, prediction_type, ...) is an error naming it
        var scheduler = Scheduler.FromConfig(DiffusersConfig.Load(file));
        Assert.NotNull(scheduler);
    }

    private static string Preview(List<string> items) =>
        items.Count == 0 ? "none" : string.Join(", ", items.Take(20)) + (items.Count > 20 ? $", ... ({items.Count - 20} more)" : "");
}
