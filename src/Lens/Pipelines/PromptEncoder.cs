using DiffusionLens.Loading;
using DiffusionLens.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Pipelines;

/// <summary>
/// A pipeline's tokenizer and text encoder alone (no UNet, no VAE, no scheduler): what encoding a prompt needs.
/// Loaded with the rules of <see cref="LensPipeline.Load"/> (pipeline class, variant, dtype, device), and encodes
/// exactly as <see cref="LensPipeline.EncodeLayers"/> and <see cref="LensPipeline.Lens"/> do.
/// </summary>
internal sealed class PromptEncoder : IDisposable
{
    public required string ModelDir { get; init; }
    public required Device Device { get; init; }
    public required ScalarType DType { get; init; }
    /// <summary>"sd", "sdxl", "if" or "flux" (<see cref="PromptTokenizer.Kind"/>).</summary>
    public required string Kind { get; init; }
    public required PromptTokenizer Tokenizer { get; init; }
    public required ITextEncoder TextEncoder { get; init; }
    /// <summary>The component the text encoder was read from (<see cref="EncoderComponent"/>).</summary>
    public required string Component { get; init; }
    public string? Variant { get; init; }
    public int NumLayers => TextEncoder.NumLayers;

    /// <summary>Opens a diffusers folder's tokenizer and text encoder, never reading the other components' weights.</summary>
    public static PromptEncoder Load(string modelDir, string device = "cpu", string dtype = "float32", string? variant = null)
    {
        var index = ModelIndex.Load(modelDir);
        var dev = LensPipeline.ParseDevice(device);
        var dt = LensPipeline.ParseDType(dtype);
        var components = LensPipeline.PipelineComponents(index);
        // the same variant rule as the full pipeline: some component of the pipeline must hold the variant's files
        WeightSet.CheckPipelineVariant(modelDir, components.Select(index.Require), variant);
        // the lensed encoder: SDXL's and FLUX's second one (OpenCLIP bigG with its projection; T5), as lens sweep lenses
        var tokenizer = PromptTokenizer.Load(index);
        var component = EncoderComponent(index.ClassName);
        var teDir = index.Require(component);
        var teVariant = WeightSet.ComponentVariant(teDir, variant);
        ITextEncoder encoder = index.ClassName switch
        {
            "IFPipeline" or FluxPipeline.ClassName => T5EncoderModel.FromFolder(teDir, dev, dt, teVariant),
            "StableDiffusionXLPipeline" => ClipTextModelWithProjection.FromFolder(teDir, dev, dt, teVariant),
            _ => ClipTextModel.FromFolder(teDir, dev, dt, teVariant),
        };
        return new PromptEncoder
        {
            ModelDir = index.Folder,
            Device = dev,
            DType = dt,
            Kind = tokenizer.Kind,
            Tokenizer = tokenizer,
            TextEncoder = encoder,
            Component = component,
            Variant = variant,
        };
    }

    /// <summary>The component whose layers a pipeline's lens reads: text_encoder_2 for SDXL and FLUX, else text_encoder.</summary>
    public static string EncoderComponent(string pipelineClass) =>
        pipelineClass is "StableDiffusionXLPipeline" or FluxPipeline.ClassName ? "text_encoder_2" : "text_encoder";

    /// <summary>Preprocesses and tokenizes the prompt and runs the text encoder once, keeping every layer and the
    /// embedding output.</summary>
    public PromptLayers EncodeLayers(string prompt, bool? cleanCaption = null) =>
        EncodeLayers(Tokenizer, TextEncoder, Device, prompt, cleanCaption);

    /// <summary>The lens: the encoder's final layer norm applied to one layer's output.</summary>
    public Tensor Lens(Tensor hidden) => Lens(TextEncoder, hidden);

    internal static PromptLayers EncodeLayers(PromptTokenizer tokenizer, ITextEncoder encoder, Device device, string prompt, bool? cleanCaption)
    {
        var (ids, mask, text) = tokenizer.Tokenize(prompt, cleanCaption);
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var idsT = torch.tensor(ids, dtype: ScalarType.Int64).unsqueeze(0).to(device);
        var maskT = tokenizer.UsesAttentionMask ? torch.tensor(mask, dtype: ScalarType.Int64).unsqueeze(0).to(device) : null;
        var output = encoder.Encode(idsT, maskT); // its tensors live in this scope; the hidden states are moved out
        var hidden = output.Hidden.Select(h => h.MoveToOuterDisposeScope()).ToList();
        var embeddings = output.Embeddings.MoveToOuterDisposeScope();
        return new PromptLayers { Text = text, InputIds = ids, AttentionMask = mask, Hidden = hidden, Embeddings = embeddings };
    }

    internal static Tensor Lens(ITextEncoder encoder, Tensor hidden)
    {
        using var noGrad = torch.no_grad();
        return encoder.FinalLayerNorm(hidden);
    }

    public void Dispose() => (TextEncoder as IDisposable)?.Dispose();
}
