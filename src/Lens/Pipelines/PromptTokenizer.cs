using DiffusionLens.Loading;
using DiffusionLens.Tokenizers;

namespace DiffusionLens.Pipelines;

/// <summary>
/// A model folder's prompt tokenization exactly as its diffusers pipeline does it: CLIP for Stable Diffusion
/// (max_length padding/truncation), T5 for DeepFloyd IF (caption preprocessing, max_length 77, attention mask), T5
/// (tokenizer_2) for FLUX (max_sequence_length, no attention mask given to the encoder).
/// Loads only the tokenizer, no weights.
/// </summary>
internal sealed class PromptTokenizer
{
    private readonly ClipTokenizer? _clip;
    private readonly T5Tokenizer? _t5;
    public string Kind { get; }
    /// <summary>Whether the text encoder is given the attention mask (IF always; SD only with use_attention_mask).</summary>
    public bool UsesAttentionMask { get; }

    /// <summary>The T5 padding/truncation length: IF's 77; FLUX's max_sequence_length (set by the pipeline).</summary>
    public int T5MaxLength { get; set; } = T5Tokenizer.IfMaxLength;

    /// <summary>Receives warnings (a prompt truncated at the tokenizer's max length, as diffusers warns); null: silent.</summary>
    public Action<string>? Warn { get; set; }

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
            case "StableDiffusionXLPipeline":
                // the lensed encoder is text_encoder_2; diffusers calls both SDXL text encoders without an attention mask
                return new PromptTokenizer("sdxl", ClipTokenizer.FromFolder(index.Require("tokenizer_2")), null, false);
            case "IFPipeline":
                return new PromptTokenizer("if", null, T5Tokenizer.FromFolder(index.Require("tokenizer")), true);
            case FluxPipeline.ClassName:
                // the lensed encoder is text_encoder_2 (T5), called without an attention mask; no caption cleaning
                return new PromptTokenizer("flux", null, T5Tokenizer.FromFolder(index.Require("tokenizer_2")), false)
                    { T5MaxLength = FluxPipeline.DefaultMaxSequenceLength };
            default:
                throw new LensException($"unsupported pipeline '{index.ClassName}' in {Path.Combine(index.Folder, "model_index.json")}; supported: {LensPipeline.SupportedPipelines}");
        }
    }

    /// <returns>ids, attention mask and the text actually tokenized (IF: after caption preprocessing)</returns>
    public (long[] Ids, long[] Mask, string Text) Tokenize(string prompt, bool? cleanCaption = null)
    {
        if (_clip is not null)
        {
            if (cleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
            var (ids, mask) = _clip.Encode(prompt);
            WarnIfTruncated(_clip.Tokenize(prompt).Count, _clip.ModelMaxLength - 2, "CLIP", _clip.ModelMaxLength, prompt);
            return (ids, mask, prompt);
        }
        string text;
        if (Kind == "flux")
        {
            if (cleanCaption is not null) throw new LensException("--clean-caption applies to DeepFloyd IF models only");
            text = prompt; // FluxPipeline tokenizes the prompt as it is
        }
        else text = CaptionCleaner.Preprocess(prompt, cleanCaption ?? true); // the IF pipeline's default is clean_caption=True
        var (tids, tmask) = _t5!.Encode(text, T5MaxLength);
        WarnIfTruncated(_t5.Tokenize(text).Count, tids.Length - 1, "T5", tids.Length, text);
        return (tids, tmask, text);
    }

    private void WarnIfTruncated(int tokens, int kept, string tokenizer, int maxLength, string text)
    {
        if (Warn is null || tokens <= kept) return;
        var shown = text.Length > 60 ? text[..57] + "..." : text;
        Warn($"warning: the prompt \"{shown}\" has {tokens} tokens; {tokenizer} keeps {kept} (max_length {maxLength} with the special tokens), so the last {tokens - kept} were truncated, as diffusers truncates them");
    }
}
