using DiffusionLens.Loading;
using DiffusionLens.Pipelines;
using DiffusionLens.Schedulers;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// Teacher-forced step parity: every denoising step is fed diffusers' own inputs (its latents/images before the step,
/// its prompt embeddings, and for IF the same generator position for the variance noise), so a step's error is
/// measured alone instead of accumulated over the whole trajectory. Checked at every step: the guided model
/// prediction against stock.step_noise_pred / stock.step_model_output, and the scheduler's output against
/// stock.step_latents / stock.step_images. Tolerances: the reference's (float32 CPU: rel L2 1e-5; float16: the
/// error-ratio criterion against diffusers' float32 pipeline fed the same inputs, LowPrecisionTruth).
/// </summary>
[Collection("pipelines")]
public class StepParityTests
{
    private readonly ITestOutputHelper _out;
    public StepParityTests(ITestOutputHelper output) => _out = output;

    public static TheoryData<string> References() => new(ReferenceData.All());

    [Theory, MemberData(nameof(References))]
    public void EveryStepMatchesWhenFedDiffusersInputs(string name)
    {
        using var r = ReferenceData.Open(name);
        if (r.SkipReason is string why) Assert.Skip(why);
        using var pipe = LensPipeline.Load(r.ModelPath!, r.Device, r.DType, r.Variant);
        var device = LensPipeline.ParseDevice(r.Device);
        var dtype = LensPipeline.ParseDType(r.DType);
        using var scheduler = Scheduler.FromConfig(DiffusersConfig.Load(Path.Combine(r.ModelPath!, "scheduler", "scheduler_config.json")));
        scheduler.SetTimesteps(r.Steps);
        var timesteps = scheduler.Timesteps;
        bool isIf = r.Kind == "if";
        _out.WriteLine(r.RanOn);
        using var embeds = torch.cat(new[] { r.Read("stock_negative_embeds"), r.Read("stock_embeds") }, 0).to(dtype, device);
        using var init = r.Read(isIf ? "init_images" : "init_latents").to(device);
        using var stepOut = r.Read(isIf ? "stock.step_images" : "stock.step_latents");
        using var stepPred = r.Read(isIf ? "stock.step_model_output" : "stock.step_noise_pred");
        Assert.Equal(timesteps.Length, (int)stepOut.shape[0]);

        // IF: the generator has drawn the initial images; each step with t > 0 draws one noise of the sample's shape
        var generator = new Generator((ulong)r.Seed);
        if (isIf) torch.randn(init.shape, dtype: dtype, generator: generator).Dispose();
        double worstPred = 0, worstStep = 0;
        for (int i = 0; i < timesteps.Length; i++)
        {
            using var scope = NewDisposeScope();
            var x = i == 0 ? init : stepOut[i - 1].unsqueeze(0).to(device);
            var pred = pipe.GuidedPrediction(scheduler, x, timesteps[i], embeds, r.Guidance);
            var pRel = r.AssertMatches($"step_pred.{i}", pred[0], expected: stepPred[i]);
            // the scheduler step itself, from diffusers' own prediction (PNDM keeps its multistep state across steps)
            var next = scheduler.Step(stepPred[i].unsqueeze(0).to(device), timesteps[i], x, generator);
            var sRel = r.AssertMatches($"step_out.{i}", next[0], expected: stepOut[i]);
            worstPred = Math.Max(worstPred, pRel);
            worstStep = Math.Max(worstStep, sRel);
        }
        _out.WriteLine($"{name}: {timesteps.Length} steps, worst guided-prediction rel L2 (vs {(r.IsLowPrecision ? "float32 truth" : "diffusers")}) {worstPred:E2}, worst scheduler-step rel L2 {worstStep:E2}");
    }
}
