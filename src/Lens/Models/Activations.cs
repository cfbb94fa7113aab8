using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>diffusers' <c>get_activation</c>: the activation named by a config string (case-insensitive, as diffusers lowercases it).</summary>
internal static class Activations
{
    /// <summary>The names <see cref="Get"/> accepts (case-insensitive).</summary>
    public static readonly string[] Names = ["silu", "swish", "mish", "gelu", "relu"];

    public static Func<Tensor, Tensor> Get(string name) => name.ToLowerInvariant() switch
    {
        "swish" or "silu" => x => nn.functional.silu(x),
        "mish" => x => nn.functional.mish(x),
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        _ => throw new LensException($"unsupported activation function '{name}'"),
    };
}
