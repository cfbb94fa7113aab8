using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusionLens.Models;

/// <summary>
/// diffusers <c>TimestepEmbedding</c> (models/embeddings.py): [sample + cond_proj(condition)] -> linear_1 -> act ->
/// linear_2 -> [post_act]. Keys linear_1, linear_2, optional cond_proj.
/// </summary>
internal sealed class TimestepEmbedding : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly Linear linear_1;
    private readonly Linear? cond_proj;
    private readonly Linear linear_2;

    private readonly Func<Tensor, Tensor> _act;
    private readonly Func<Tensor, Tensor>? _postAct;

    public TimestepEmbedding(int inChannels, int timeEmbedDim, string actFn = "silu", int? outDim = null,
        string? postActFn = null, int? condProjDim = null, bool sampleProjBias = true) : base(nameof(TimestepEmbedding))
    {
        linear_1 = Layers.Linear(inChannels, timeEmbedDim, hasBias: sampleProjBias);
        if (condProjDim is int c) cond_proj = Layers.Linear(c, inChannels, hasBias: false);
        _act = Activations.Get(actFn);
        linear_2 = Layers.Linear(timeEmbedDim, outDim ?? timeEmbedDim, hasBias: sampleProjBias);
        if (postActFn is not null) _postAct = Activations.Get(postActFn);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample, Tensor? condition)
    {
        using var scope = NewDisposeScope();
        if (condition is not null)
        {
            if (cond_proj is null) throw new LensException("TimestepEmbedding: a condition was given but time_cond_proj_dim is not set");
            sample = sample + cond_proj.forward(condition);
        }
        sample = linear_1.forward(sample);
        sample = _act(sample);
        sample = linear_2.forward(sample);
        if (_postAct is not null) sample = _postAct(sample);
        return sample.MoveToOuterDisposeScope();
    }

    public Tensor forward(Tensor sample) => forward(sample, null);
}
