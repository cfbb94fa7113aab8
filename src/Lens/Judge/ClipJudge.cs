using DiffusionLens.Reports;
using Microsoft.ML.OnnxRuntime;

namespace DiffusionLens.Judge;

/// <summary>
/// An independent CLIP model (ONNX image/text encoder pair made by <c>fixtures/export_clip_onnx.py</c>) that scores
/// images for concepts: cosine similarity of the L2-normalised embeddings, and the softmax over the concepts of
/// <c>logit_scale * cosine</c>. Runs on ONNX Runtime's CPU execution provider, or CUDA when asked and available.
/// </summary>
internal sealed class ClipJudge : IConceptJudge, IDisposable
{
    public const string DefaultTemplate = "a photo of {}";

    public JudgeConfig Config { get; }
    public ClipPreprocessor Preprocessor { get; }
    /// <summary>"cpu" or "cuda".</summary>
    public string Device { get; }
    public int BatchSize { get; }

    private readonly ITextTokenizer _tokenizer;
    private readonly InferenceSession _image;
    private readonly InferenceSession _text;
    private readonly Dictionary<string, float[]> _textCache = new(StringComparer.Ordinal);

    private ClipJudge(JudgeConfig config, ITextTokenizer tokenizer, string device, int batchSize, InferenceSession image, InferenceSession text)
    {
        Config = config;
        Preprocessor = new ClipPreprocessor(config);
        _tokenizer = tokenizer;
        Device = device;
        BatchSize = batchSize;
        _image = image;
        _text = text;
    }

    /// <param name="folder">a folder with judge.json, the two ONNX files and the tokenizer files</param>
    /// <param name="tokenizer">the CLIP BPE tokenizer (usually built from the same folder's vocab.json + merges.txt)</param>
    /// <param name="device">"cpu" (default) or "cuda" (needs ONNX Runtime's CUDA execution provider)</param>
    /// <param name="batchSize">images per encoder call</param>
    public static ClipJudge Load(string folder, ITextTokenizer tokenizer, string device = "cpu", int batchSize = 16)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (batchSize < 1) throw new LensException($"judge batch size must be at least 1, got {batchSize}");
        var config = JudgeConfig.Load(folder);
        device = device.ToLowerInvariant();
        if (device is not ("cpu" or "cuda")) throw new LensException($"judge device '{device}' is not supported; use cpu or cuda");
        var image = CreateSession(config.ImageEncoderPath, device);
        InferenceSession text;
        try { text = CreateSession(config.TextEncoderPath, device); }
        catch { image.Dispose(); throw; }
        var judge = new ClipJudge(config, tokenizer, device, batchSize, image, text);
        try { judge.CheckIo(); }
        catch { judge.Dispose(); throw; }
        return judge;
    }

    /// <summary>ONNX Runtime's execution providers in this process (e.g. CPUExecutionProvider).</summary>
    public static IReadOnlyList<string> AvailableProviders() => OrtEnv.Instance().GetAvailableProviders();

    private static InferenceSession CreateSession(string path, string device)
    {
        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        try
        {
            if (device == "cuda")
            {
                var providers = AvailableProviders();
                if (!providers.Contains("CUDAExecutionProvider"))
                    throw new LensException(
                        "--judge-device cuda: ONNX Runtime's CUDA execution provider is not available in this build " +
                        $"(available: {string.Join(", ", providers)}). This build uses the CPU package Microsoft.ML.OnnxRuntime; " +
                        "build with `-p:OnnxBackend=cuda` (Microsoft.ML.OnnxRuntime.Gpu.Linux 1.31: CUDA 13, cuDNN 9), " +
                        "or use --judge-device cpu.");
                var libraries = OnnxCudaLibraries.Preload();
                // TF32 off: the judge's float32 scores then agree with the CPU provider's to float32 rounding
                using var cuda = new OrtCUDAProviderOptions();
                try
                {
                    cuda.UpdateOptions(new Dictionary<string, string> { ["device_id"] = "0", ["use_tf32"] = "0" });
                    options.AppendExecutionProvider_CUDA(cuda);
                }
                catch (OnnxRuntimeException e)
                {
                    throw new LensException($"--judge-device cuda: ONNX Runtime could not start its CUDA execution provider " +
                                            $"(CUDA libraries: {libraries}): {e.Message}");
                }
            }
            return new InferenceSession(path, options);
        }
        catch (OnnxRuntimeException e)
        {
            throw new LensException($"cannot load ONNX model {path}: {e.Message}");
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException)
        {
            // e.g. an app folder without libonnxruntime.so (ci/gpu-pack.sh leaves it out: the GPU run does not judge)
            throw new LensException($"the CLIP judge needs ONNX Runtime's native library, which this build could not load " +
                                    $"({(e.InnerException ?? e).Message}); build with the Microsoft.ML.OnnxRuntime package beside the app");
        }
        finally
        {
            options.Dispose();
        }
    }

    private void CheckIo()
    {
        void Check(InferenceSession s, string file, string input, string output, int rank)
        {
            if (!s.InputMetadata.TryGetValue(input, out var meta))
                throw new LensException($"{file}: has no input '{input}' (inputs: {string.Join(", ", s.InputMetadata.Keys)})");
            if (meta.Dimensions.Length != rank)
                throw new LensException($"{file}: input '{input}' has rank {meta.Dimensions.Length}, expected {rank}");
            if (!s.OutputMetadata.ContainsKey(output))
                throw new LensException($"{file}: has no output '{output}' (outputs: {string.Join(", ", s.OutputMetadata.Keys)})");
        }
        Check(_image, Config.ImageEncoderPath, Config.ImageInput, Config.ImageOutput, 4);
        Check(_text, Config.TextEncoderPath, Config.TextInput, Config.TextOutput, 2);
    }

    /// <summary>Image embeddings (projected, not normalised), one per image, batched by <see cref="BatchSize"/>.</summary>
    public float[][] EmbedImages(IReadOnlyList<RgbImage> images)
    {
        int n = images.Count, len = Preprocessor.Length, s = Config.ImageSize;
        var result = new float[n][];
        for (int start = 0; start < n; start += BatchSize)
        {
            int b = Math.Min(BatchSize, n - start);
            var batch = new float[b * len];
            Parallel.For(0, b, i => Preprocessor.Preprocess(images[start + i], batch.AsSpan(i * len, len)));
            var emb = RunFloat(_image, Config.ImageInput, Config.ImageOutput,
                OrtValue.CreateTensorValueFromMemory(batch, new long[] { b, 3, s, s }), b);
            for (int i = 0; i < b; i++) result[start + i] = emb[i];
        }
        return result;
    }

    /// <summary>Image embeddings of already preprocessed CHW tensors (3 * size * size floats each).</summary>
    public float[][] EmbedPixels(IReadOnlyList<float[]> pixels)
    {
        int n = pixels.Count, len = Preprocessor.Length, s = Config.ImageSize;
        var result = new float[n][];
        for (int start = 0; start < n; start += BatchSize)
        {
            int b = Math.Min(BatchSize, n - start);
            var batch = new float[b * len];
            for (int i = 0; i < b; i++)
            {
                if (pixels[start + i].Length != len) throw new LensException($"pixel tensor {start + i} has {pixels[start + i].Length} values, expected {len}");
                pixels[start + i].CopyTo(batch, i * len);
            }
            var emb = RunFloat(_image, Config.ImageInput, Config.ImageOutput,
                OrtValue.CreateTensorValueFromMemory(batch, new long[] { b, 3, s, s }), b);
            for (int i = 0; i < b; i++) result[start + i] = emb[i];
        }
        return result;
    }

    /// <summary>Token ids padded with pad_token_id or truncated (end-of-text kept last) to the context length.</summary>
    public long[] FitToContext(long[] ids, string text)
    {
        int ctx = Config.ContextLength;
        if (ids.Length < 2 || ids[0] != Config.BosTokenId || !ids.Contains(Config.EosTokenId))
            throw new LensException($"the tokenizer gave {ids.Length} ids for '{text}' without <|startoftext|> ({Config.BosTokenId}) first and <|endoftext|> ({Config.EosTokenId}); the judge needs CLIP's special tokens");
        var result = new long[ctx];
        if (ids.Length >= ctx)
        {
            int eos = Array.IndexOf(ids, Config.EosTokenId);
            if (eos < ctx) Array.Copy(ids, result, ctx); // already ends within the context (padded input)
            else
            {
                Array.Copy(ids, result, ctx - 1);
                result[ctx - 1] = Config.EosTokenId;
            }
            return result;
        }
        Array.Copy(ids, result, ids.Length);
        for (int i = ids.Length; i < ctx; i++) result[i] = Config.PadTokenId;
        return result;
    }

    /// <summary>Text embeddings (projected, not normalised) for token id rows of the context length.</summary>
    public float[][] EmbedTokenIds(IReadOnlyList<long[]> rows)
    {
        int n = rows.Count, ctx = Config.ContextLength;
        var result = new float[n][];
        for (int start = 0; start < n; start += BatchSize)
        {
            int b = Math.Min(BatchSize, n - start);
            var batch = new long[b * ctx];
            for (int i = 0; i < b; i++)
            {
                if (rows[start + i].Length != ctx) throw new LensException($"token row {start + i} has {rows[start + i].Length} ids, expected {ctx}");
                rows[start + i].CopyTo(batch, i * ctx);
            }
            var emb = RunFloat(_text, Config.TextInput, Config.TextOutput,
                OrtValue.CreateTensorValueFromMemory(batch, new long[] { b, ctx }), b);
            for (int i = 0; i < b; i++) result[start + i] = emb[i];
        }
        return result;
    }

    /// <summary>Text embeddings (projected, not normalised), tokenized with the judge's tokenizer; cached per text.</summary>
    public float[][] EmbedTexts(IReadOnlyList<string> texts)
    {
        var missing = texts.Distinct().Where(t => !_textCache.ContainsKey(t)).ToList();
        if (missing.Count > 0)
        {
            var rows = missing.Select(t => FitToContext(_tokenizer.Encode(t).ids, t)).ToList();
            var emb = EmbedTokenIds(rows);
            for (int i = 0; i < missing.Count; i++) _textCache[missing[i]] = emb[i];
        }
        return texts.Select(t => _textCache[t]).ToArray();
    }

    private static float[][] RunFloat(InferenceSession session, string input, string output, OrtValue value, int batch)
    {
        using (value)
        {
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, new[] { input }, new[] { value }, new[] { output });
            var tensor = results[0];
            var shape = tensor.GetTensorTypeAndShape().Shape;
            if (shape.Length != 2 || shape[0] != batch)
                throw new LensException($"ONNX output '{output}' has shape [{string.Join(", ", shape)}], expected [{batch}, D]");
            var data = tensor.GetTensorDataAsSpan<float>();
            int d = (int)shape[1];
            var rows = new float[batch][];
            for (int i = 0; i < batch; i++) rows[i] = data.Slice(i * d, d).ToArray();
            return rows;
        }
    }

    /// <summary>The text for one concept: <paramref name="template"/> with "{}" (or "{concept}") replaced.</summary>
    public static string ConceptText(string template, string concept)
    {
        if (template.Contains("{concept}")) return template.Replace("{concept}", concept);
        if (template.Contains("{}")) return template.Replace("{}", concept);
        throw new LensException($"prompt template '{template}' has no '{{}}' placeholder for the concept");
    }

    /// <inheritdoc/>
    public JudgeScores Score(IReadOnlyList<LayerImage> images, IReadOnlyList<string> concepts, string template = DefaultTemplate,
        IReadOnlyList<string>? distractors = null)
    {
        var labels = ConceptSet.Validate(concepts, distractors);
        if (images.Count == 0) throw new LensException("no images to judge");
        var texts = labels.Select(c => ConceptText(template, c)).ToArray();
        var textEmb = EmbedTexts(texts).Select(Normalize).ToArray();
        var rgb = new RgbImage[images.Count];
        Parallel.For(0, images.Count, i => rgb[i] = RgbImage.Load(images[i].Path));
        var imgEmb = EmbedImages(rgb).Select(Normalize).ToArray();
        var layers = new List<LayerScore>();
        for (int i = 0; i < images.Count; i++)
        {
            var cos = textEmb.Select(t => Dot(imgEmb[i], t)).ToArray();
            layers.Add(new LayerScore
            {
                Layer = images[i].Layer,
                Image = Path.GetFileName(images[i].Path),
                Cosine = cos,
                Prob = JudgeScores.Softmax(cos.Select(c => Config.LogitScale * c).ToArray()),
            });
        }
        return new JudgeScores
        {
            Judge = new JudgeInfo { Folder = Path.GetFullPath(Config.Folder), Source = Config.Source, LogitScale = Config.LogitScale, ImageSize = Config.ImageSize, Device = Device },
            Template = template,
            Concepts = concepts.ToArray(),
            Distractors = (distractors ?? Array.Empty<string>()).ToArray(),
            Texts = texts,
            Layers = layers,
        };
    }

    public static double[] Normalize(float[] v)
    {
        double n = 0;
        foreach (var x in v) n += (double)x * x;
        n = Math.Sqrt(n);
        if (n == 0) throw new LensException("an embedding is all zeros; cannot take its cosine similarity");
        return v.Select(x => x / n).ToArray();
    }

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    public void Dispose()
    {
        _image.Dispose();
        _text.Dispose();
    }
}
