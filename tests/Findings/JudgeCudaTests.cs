using DiffusionLens.Judge;
using DiffusionLens.Reports;

namespace DiffusionLens.Tests.Findings;

/// <summary>
/// The CLIP judge on ONNX Runtime's CUDA execution provider (a build with <c>-p:OnnxBackend=cuda</c> on a GPU host):
/// the same embeddings, cosines and probabilities as the CPU provider in the same process, within float32 rounding
/// (TF32 is off for the judge). Skipped, with the reason, in a CPU-package build or where the provider cannot start.
/// </summary>
public class JudgeCudaTests
{
    // float32 through different kernels (cuBLAS/cuDNN vs MLAS), TF32 off: embeddings agree to a few ulps of their scale
    private const double EmbeddingTol = 2e-5;
    private const double CosineTol = 2e-5;
    private const double ProbTol = 1e-4;

    private static ClipJudge CudaJudgeOrSkip(ITextTokenizer tokenizer)
    {
        Repo.RequireTinyClip();
        var providers = ClipJudge.AvailableProviders();
        if (!providers.Contains("CUDAExecutionProvider"))
            Assert.Skip($"this build uses the CPU ONNX Runtime package (providers: {string.Join(", ", providers)}); build with -p:OnnxBackend=cuda on a GPU host");
        try { return ClipJudge.Load(Repo.TinyClipDir, tokenizer, "cuda", batchSize: 2); }
        catch (LensException e) when (e.Message.Contains("could not start its CUDA execution provider"))
        {
            Assert.Skip($"ONNX Runtime's CUDA provider could not start here (no GPU or no CUDA 13 libraries): {e.Message}");
            throw;
        }
    }

    private static double MaxAbs(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    [Fact]
    public void Cuda_provider_scores_match_the_cpu_provider()
    {
        var tok = JudgeCommandTests.HashTokenizer();
        using var cuda = CudaJudgeOrSkip(tok);
        using var cpu = ClipJudge.Load(Repo.TinyClipDir, tok, "cpu", batchSize: 2);
        var files = JudgeFixtureTests.LoadReference().Files.Select(f => Path.Combine(Repo.TinyClipDir, f)).ToList();
        Assert.NotEmpty(files);
        var rgb = files.Select(RgbImage.Load).ToList();
        var eCuda = cuda.EmbedImages(rgb);
        var eCpu = cpu.EmbedImages(rgb);
        double worstImage = 0;
        for (int i = 0; i < files.Count; i++) worstImage = Math.Max(worstImage, MaxAbs(eCuda[i], eCpu[i]));
        string[] concepts = ["people", "ocean", "a dog on a sofa", "red car"];
        var tCuda = cuda.EmbedTexts(concepts);
        var tCpu = cpu.EmbedTexts(concepts);
        double worstText = 0;
        for (int i = 0; i < concepts.Length; i++) worstText = Math.Max(worstText, MaxAbs(tCuda[i], tCpu[i]));
        var images = files.Select((f, i) => new LayerImage(i, f)).ToList();
        var sCuda = cuda.Score(images, concepts);
        var sCpu = cpu.Score(images, concepts);
        double worstCos = 0, worstProb = 0;
        for (int i = 0; i < images.Count; i++)
            for (int t = 0; t < concepts.Length; t++)
            {
                worstCos = Math.Max(worstCos, Math.Abs(sCuda.Layers[i].Cosine[t] - sCpu.Layers[i].Cosine[t]));
                worstProb = Math.Max(worstProb, Math.Abs(sCuda.Layers[i].Prob[t] - sCpu.Layers[i].Prob[t]));
            }
        var report = $"CUDA vs CPU provider ({OnnxCudaLibraries.Source}): image embeddings max |diff| {worstImage:E2}, " +
                     $"text {worstText:E2}, cosine {worstCos:E2}, probability {worstProb:E2}";
        TestContext.Current.TestOutputHelper?.WriteLine(report);
        Console.WriteLine(report);
        Assert.True(worstImage <= EmbeddingTol, report);
        Assert.True(worstText <= EmbeddingTol, report);
        Assert.True(worstCos <= CosineTol, report);
        Assert.True(worstProb <= ProbTol, report);
    }

    [Fact]
    public void Cuda_judge_matches_the_pytorch_reference_embeddings()
    {
        var tok = JudgeCommandTests.HashTokenizer();
        using var cuda = CudaJudgeOrSkip(tok);
        var reference = JudgeFixtureTests.LoadReference();
        var emb = cuda.EmbedImages(reference.Files.Select(f => RgbImage.Load(Path.Combine(Repo.TinyClipDir, f))).ToList());
        for (int i = 0; i < reference.Files.Length; i++)
            Assert.True(MaxAbs(emb[i], reference.ImageEmb[i]) < 2e-5, $"{reference.Files[i]}: max |diff| {MaxAbs(emb[i], reference.ImageEmb[i])}");
    }
}
