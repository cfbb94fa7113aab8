using DiffusionLens.Reports;
using DiffusionLens.Judge;

namespace DiffusionLens.Tests.Findings;

/// <summary>The judge on ONNX Runtime with the linear stand-in model (always runs; the PyTorch-made fixture is
/// checked by <see cref="JudgeFixtureTests"/>).</summary>
public class JudgeOnnxPlumbingTests
{
    private static ITextTokenizer Tok() => JudgeCommandTests.HashTokenizer();

    private static double[] ImageEmbedding(float[] pixels)
    {
        var e = new double[FakeOnnxClip.Dim];
        for (int r = 0; r < pixels.Length; r++)
            for (int c = 0; c < e.Length; c++) e[c] += (double)pixels[r] * FakeOnnxClip.WeightW(r, c);
        return e;
    }

    private static double[] TextEmbedding(long[] ids)
    {
        var e = new double[FakeOnnxClip.Dim];
        foreach (var id in ids)
            for (int c = 0; c < e.Length; c++) e[c] += FakeOnnxClip.WeightE((int)id, c) / (double)ids.Length;
        return e;
    }

    private static List<LayerImage> Images(TempDir tmp, int n)
    {
        var list = new List<LayerImage>();
        for (int l = 0; l < n; l++)
        {
            int w = 10 + l, h = 9 + 2 * l;
            var px = new byte[w * h * 3];
            for (int i = 0; i < px.Length; i++) px[i] = (byte)((i * (l + 3) * 37) % 251);
            var path = tmp.Sub("imgs", $"layer-{l:D2}.png");
            new RgbImage(w, h, px).SavePng(path);
            list.Add(new LayerImage(l, path));
        }
        return list;
    }

    [Fact]
    public void Embeddings_batches_and_scores_match_a_direct_computation()
    {
        using var tmp = new TempDir();
        FakeOnnxClip.Write(tmp.Sub("clip"));
        var images = Images(tmp, 5);
        using var judge = ClipJudge.Load(tmp.Sub("clip"), Tok(), batchSize: 2);
        Assert.Equal("cpu", judge.Device);

        var rgb = images.Select(i => RgbImage.Load(i.Path)).ToList();
        var emb = judge.EmbedImages(rgb);
        for (int i = 0; i < rgb.Count; i++)
        {
            var want = ImageEmbedding(judge.Preprocessor.Preprocess(rgb[i]));
            for (int c = 0; c < FakeOnnxClip.Dim; c++) Assert.Equal(want[c], emb[i][c], 4);
        }

        var texts = new[] { "a photo of people", "a photo of ocean", "a photo of noise" };
        var temb = judge.EmbedTexts(texts);
        for (int t = 0; t < texts.Length; t++)
        {
            var ids = judge.FitToContext(Tok().Encode(texts[t]).ids, texts[t]);
            Assert.Equal(FakeOnnxClip.Context, ids.Length);
            Assert.All(ids.Skip(Tok().Encode(texts[t]).ids.Length), id => Assert.Equal(49407, id)); // padded with pad_token_id
            var want = TextEmbedding(ids);
            for (int c = 0; c < FakeOnnxClip.Dim; c++) Assert.Equal(want[c], temb[t][c], 4);
        }

        var scores = judge.Score(images, new[] { "people", "ocean" }, distractors: new[] { "noise" });
        Assert.Equal(new[] { 0, 1, 2, 3, 4 }, scores.LayerNumbers);
        Assert.Equal(texts, scores.Texts);
        for (int i = 0; i < images.Count; i++)
        {
            var im = ClipJudge.Normalize(emb[i]);
            var cos = temb.Select(t => ClipJudge.Normalize(t).Zip(im, (a, b) => a * b).Sum()).ToArray();
            var prob = JudgeScores.Softmax(cos.Select(c => 20.0 * c).ToArray());
            for (int t = 0; t < 3; t++)
            {
                Assert.Equal(cos[t], scores.Layers[i].Cosine[t], 5);
                Assert.Equal(prob[t], scores.Layers[i].Prob[t], 4);
            }
        }
    }

    [Fact]
    public void Long_texts_are_truncated_with_end_of_text_kept()
    {
        using var tmp = new TempDir();
        FakeOnnxClip.Write(tmp.Sub("clip"));
        using var judge = ClipJudge.Load(tmp.Sub("clip"), Tok());
        var ids = Enumerable.Repeat(320L, 100).Prepend(49406).Append(49407).ToArray();
        var fit = judge.FitToContext(ids, "long");
        Assert.Equal(77, fit.Length);
        Assert.Equal(49406, fit[0]);
        Assert.Equal(49407, fit[76]);
        Assert.Throws<LensException>(() => judge.FitToContext(new long[] { 320, 321 }, "no specials"));
    }

    [Fact]
    public void Cuda_request_without_the_cuda_provider_gives_a_clear_error()
    {
        if (ClipJudge.AvailableProviders().Contains("CUDAExecutionProvider")) Assert.Skip("this ONNX Runtime build has the CUDA provider");
        using var tmp = new TempDir();
        FakeOnnxClip.Write(tmp.Sub("clip"));
        var e = Assert.Throws<LensException>(() => ClipJudge.Load(tmp.Sub("clip"), Tok(), "cuda"));
        Assert.Contains("CUDA execution provider is not available", e.Message);
        Assert.Contains("judge device 'tpu'", Assert.Throws<LensException>(() => ClipJudge.Load(tmp.Sub("clip"), Tok(), "tpu")).Message);
    }

    [Fact]
    public void Judge_folder_problems_are_reported_by_name()
    {
        using var tmp = new TempDir();
        FakeOnnxClip.Write(tmp.Sub("clip"));
        var judgeJson = tmp.Sub("clip", "judge.json");
        var text = File.ReadAllText(judgeJson);
        File.WriteAllText(judgeJson, text.Replace("\"bicubic\"", "\"bilinear\""));
        Assert.Contains("interpolation 'bilinear'", Assert.Throws<LensException>(() => JudgeConfig.Load(tmp.Sub("clip"))).Message);
        File.WriteAllText(judgeJson, text.Replace("\"image_embeds\"", "\"embeds\"").Replace("\"image_encoder\":", "\"image_output\":\"embeds\",\"image_encoder\":"));
        Assert.Contains("no output 'embeds'", Assert.Throws<LensException>(() => ClipJudge.Load(tmp.Sub("clip"), Tok())).Message);
        File.WriteAllText(judgeJson, text);
        File.Delete(tmp.Sub("clip", "text_encoder.onnx"));
        Assert.Contains("text_encoder.onnx", Assert.Throws<LensException>(() => JudgeConfig.Load(tmp.Sub("clip"))).Message);
    }
}
