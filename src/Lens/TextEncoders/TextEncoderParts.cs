using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.TextEncoders;

/// <summary>
/// Layer constructors for the text encoders. Linear parameters are created zero-filled directly on the target device
/// and dtype (no random initialisation, no float32 staging copy): a model is always filled by
/// <see cref="Loading.StrictLoader"/> afterwards, and a multi-billion-parameter T5 would otherwise spend a long time on
/// initialisation it throws away.
/// </summary>
internal static class TextEncoderParts
{
    public static Models.Linear Linear(long inFeatures, long outFeatures, bool bias, Device? device, ScalarType dtype)
    {
        var w = new Parameter(torch.zeros(new[] { outFeatures, inFeatures }, dtype: dtype, device: device), requires_grad: false);
        var b = bias ? new Parameter(torch.zeros(new[] { outFeatures }, dtype: dtype, device: device), requires_grad: false) : null;
        return new Models.Linear(w, b);
    }

    /// <remarks>nn.Embedding initialises its weight (normal_), which is cheap next to the linear layers; TorchSharp's
    /// Embedding_from_pretrained is not used because in-place writes to its registered parameter do not reach the
    /// weight its forward uses.</remarks>
    public static Embedding Embedding(long num, long dim, Device? device, ScalarType dtype)
    {
        var e = nn.Embedding(num, dim, device: device, dtype: dtype);
        foreach (var p in e.parameters()) p.requires_grad = false;
        return e;
    }

    public static LayerNorm LayerNorm(long dim, double eps, Device? device, ScalarType dtype)
    {
        var ln = nn.LayerNorm(dim, eps, elementwise_affine: true, bias: true, device: device, dtype: dtype);
        foreach (var p in ln.parameters()) p.requires_grad = false;
        return ln;
    }

    /// <summary>Detaches every output tensor from the current dispose scope into the caller's.</summary>
    public static List<Tensor> MoveAllToOuter(IEnumerable<Tensor> tensors) => tensors.Select(t => t.MoveToOuterDisposeScope()).ToList();
}
