using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// transformers' <c>ACT2FN</c> (activations.py): the activation named by a config's <c>hidden_act</c> /
/// <c>dense_act_fn</c>, with the same op order as the Python classes (which matters for bit-level parity).
/// </summary>
internal static class TransformersActivations
{
    private static readonly double Sqrt2OverPi = Math.Sqrt(2.0 / Math.PI);

    public static readonly string[] Supported =
        { "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python", "quick_gelu", "relu", "silu", "swish", "tanh", "sigmoid", "linear" };

    public static Func<Tensor, Tensor> Get(string name) => name switch
    {
        // GELUActivation: torch's exact (erf) gelu
        "gelu" => x => nn.functional.gelu(x),
        // GELUActivation(use_gelu_python=True): input * 0.5 * (1.0 + erf(input / sqrt(2.0)))
        "gelu_python" => x => x * 0.5 * (torch.erf(x / Math.Sqrt(2.0)) + 1.0),
        // NewGELUActivation: 0.5 * input * (1.0 + tanh(sqrt(2/pi) * (input + 0.044715 * pow(input, 3.0))))
        "gelu_new" => NewGelu,
        // FastGELUActivation: 0.5 * input * (1.0 + tanh(input * 0.7978845608 * (1.0 + 0.044715 * input * input)))
        "gelu_fast" => x => x * 0.5 * (torch.tanh(x * 0.7978845608 * (x * 0.044715 * x + 1.0)) + 1.0),
        // PytorchGELUTanh / GELUTanh: torch's tanh-approximated gelu
        "gelu_pytorch_tanh" => x => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        // QuickGELUActivation: input * sigmoid(1.702 * input)
        "quick_gelu" => x => x * torch.sigmoid(x * 1.702),
        "relu" => x => nn.functional.relu(x),
        "silu" or "swish" => x => nn.functional.silu(x),
        "tanh" => x => torch.tanh(x),
        "sigmoid" => x => torch.sigmoid(x),
        "linear" => x => x.alias(),
        _ => throw new LensException($"unsupported activation function '{name}' (supported: {string.Join(", ", Supported)})"),
    };

    private static Tensor NewGelu(Tensor x)
    {
        using var scope = NewDisposeScope();
        // Python evaluates 0.5 * input first, then multiplies by (1.0 + tanh(...)); 1.0 + t == t + 1.0 and
        // c * t == t * c bit for bit (commutative IEEE ops), so only the grouping has to be kept.
        var inner = (x + x.pow(3.0) * 0.044715) * Sqrt2OverPi;
        var result = (x * 0.5) * (torch.tanh(inner) + 1.0);
        return result.MoveToOuterDisposeScope();
    }
}
