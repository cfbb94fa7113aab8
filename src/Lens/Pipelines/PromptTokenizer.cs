using DiffusionLens.Loading;
using DiffusionLens.Tokenizers;

namespace DiffusionLens.Pipelines;

/// <summary>
/// A model folder's prompt tokenization exactly as its diffusers pipeline does it: CLIP for Stable Diffusion
/// (max_length padding/truncation), T5 for DeepFloyd IF (caption preprocessing, max_length 77, attention mask).
/// Loads only the tokenizer, no weights.
/// </summary>
public sealed class PromptTokenizer
{
    private readonly ClipTokenizer? _clip;
    private readonly T5Tokenizer? _t5;
    public string Kind { get; }
    /// <summary>Whether the text encoder is given the attention mask (IF always; SD only with use_attention_mask).</summary>
    public bool UsesAttentionMask { get; }

    private PromptTokenizer(string kind, ClipTokenizer? clip, T5Tokenizer? t5, bool usesMask)
    {
        Kind = kind;
        _clip = clip;
        _t5 = t5;
        UsesAttentionMask = usesMask;
    }

    public static PromptTokenizer Load(string modelDir) => Load(ModelIndex.Load(modelDir));

    public static PromptTokenizer Load(ModelIndex index)
    {
        switch (index.ClassName)
        {
            case "StableDiffusionPipeline":
            {
                var teCfg = Path.Combine(index.Require("text_encoder"), "config.json");
                bool mask = DiffusersConfig.Load(teCfg).Bool("use_attention_mask", false);
                return new PromptTokenizer("sd", ClipTokenizer.FromFolder(index.Require("tokenizer")), null, mask);
            }
            case "IFPipeline":
                return new PromptTokenizer("if", null, T5Tokenizer.FromFolder(index.Require("tokenizer")), true);
            default:
                throw new LensException($"unsupported pipeline '{index.ClassName}' in {Path.Combine(index.Folder, "model_index.json")}; supported: StableDiffusionPipeline, IFPipeline");
        }
    }

    /// <returns>ids, attention mask and the text actually tokenized (IF: after caption preprocessing)</returns>
    public (long[] Ids, long[] Mask, string Text) Tokenize(string prompt, bool? cleanCaption = null)
    {
        if (_clip is not null)
        {
            if (cleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
            var (ids, mask) = _clip.Encode(prompt);
            return (ids, mask, prompt);
        }
        // the IF pipeline's default is clean_caption=True
        var text = CaptionCleaner.Preprocess(prompt, cleanCaption ?? true);
        var (tids, tmask) = _t5!.Encode(text);
        return (tids, tmask, text);
    }
}
