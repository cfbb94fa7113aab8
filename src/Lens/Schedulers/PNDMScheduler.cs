using DiffusionLens.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// diffusers <c>PNDMScheduler</c> (schedulers/scheduling_pndm.py): pseudo numerical methods — Runge-Kutta (PRK) warm-up
/// steps then linear multistep (PLMS), or PLMS only with <c>skip_prk_steps</c> (Stable Diffusion). The running state
/// (<c>ets</c>, <c>counter</c>, <c>cur_sample</c>, <c>cur_model_output</c>) behaves as in diffusers, and every tensor
/// expression keeps diffusers' operand order (float32 tensors, 0-dim float32 alphas, Python-float coefficients).
/// Config: num_train_timesteps, beta_start, beta_end, beta_schedule (linear, scaled_linear, squaredcos_cap_v2),
/// trained_betas, skip_prk_steps, set_alpha_to_one, prediction_type (epsilon, v_prediction),
/// timestep_spacing (linspace, leading, trailing), steps_offset.
/// </summary>
internal sealed class PNDMScheduler : Scheduler
{
    public bool SkipPrkSteps { get; }
    public bool SetAlphaToOne { get; }
    public string PredictionType { get; }
    public string TimestepSpacing { get; }
    public int StepsOffset { get; }

    private readonly Tensor _finalAlphaCumprod;
    private const int PndmOrder = 4;

    private long[] _timestepsRaw = Array.Empty<long>();
    /// <summary>The PRK timesteps (empty with skip_prk_steps).</summary>
    public long[] PrkTimesteps { get; private set; } = Array.Empty<long>();
    /// <summary>The PLMS timesteps.</summary>
    public long[] PlmsTimesteps { get; private set; } = Array.Empty<long>();

    // running values
    private Tensor? _curModelOutput; // null = the int 0 of diffusers
    private Tensor? _curSample;
    private readonly List<Tensor> _ets = new();
    /// <summary>diffusers' <c>counter</c>: the number of steps taken since <see cref="SetTimesteps"/>.</summary>
    public int Counter { get; private set; }

    public PNDMScheduler(DiffusersConfig config)
        : base(config, new[] { "linear", "scaled_linear", "squaredcos_cap_v2" })
    {
        SkipPrkSteps = Opt(config, "skip_prk_steps", false);
        SetAlphaToOne = Opt(config, "set_alpha_to_one", false);
        PredictionType = ValidateChoice(config, "prediction_type", "epsilon", "epsilon", "v_prediction");
        TimestepSpacing = ValidateChoice(config, "timestep_spacing", "leading", "linspace", "leading", "trailing");
        StepsOffset = Opt(config, "steps_offset", 0);
        // final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else alphas_cumprod[0]
        _finalAlphaCumprod = (SetAlphaToOne ? torch.tensor(1.0f) : AlphasCumprod[0].clone()).DetachFromDisposeScope();
    }

    public override void SetTimesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1) throw new LensException($"the number of inference steps must be positive, not {numInferenceSteps}");
        NumInferenceSteps = numInferenceSteps;
        int n = NumTrainTimesteps;
        switch (TimestepSpacing)
        {
            case "linspace":
                // np.linspace(0, N - 1, steps).round().astype(np.int64)
                _timestepsRaw = NpLinspace(0, n - 1, numInferenceSteps).Select(NpRound).ToArray();
                break;
            case "leading":
            {
                // (np.arange(0, steps) * (N // steps)).round() + steps_offset
                int ratio = n / numInferenceSteps;
                _timestepsRaw = Enumerable.Range(0, numInferenceSteps).Select(i => (long)i * ratio + StepsOffset).ToArray();
                break;
            }
            case "trailing":
            {
                // np.round(np.arange(N, 0, -N / steps))[::-1].astype(np.int64) - 1
                double ratio = (double)n / numInferenceSteps;
                _timestepsRaw = NpArange(n, 0, -ratio).Select(NpRound).Reverse().Select(t => t - 1).ToArray();
                break;
            }
        }

        long[] ts = _timestepsRaw;
        if (SkipPrkSteps)
        {
            // prk = []; plms = concat([ts[:-1], ts[-2:-1], ts[-1:]])[::-1] — the second-to-last entry is repeated
            PrkTimesteps = Array.Empty<long>();
            var plms = new List<long>();
            plms.AddRange(ts.Take(ts.Length - 1));
            if (ts.Length >= 2) plms.Add(ts[^2]);
            plms.Add(ts[^1]);
            plms.Reverse();
            PlmsTimesteps = plms.ToArray();
        }
        else
        {
            // prk = np.array(ts[-4:]).repeat(2) + np.tile([0, N // steps // 2], 4); prk = prk[:-1].repeat(2)[1:-1][::-1]
            long half = n / numInferenceSteps / 2;
            var last = ts.Skip(Math.Max(0, ts.Length - PndmOrder)).ToArray();
            var rep = last.SelectMany(t => new[] { t, t }).ToArray();
            var tile = Enumerable.Range(0, PndmOrder).SelectMany(_ => new[] { 0L, half }).ToArray();
            if (rep.Length != tile.Length)
                throw new LensException($"PNDMScheduler with skip_prk_steps=false needs at least {PndmOrder} inference steps, got {numInferenceSteps}");
            var prk = rep.Zip(tile, (a, b) => a + b).ToArray();
            var prk2 = prk.Take(prk.Length - 1).SelectMany(t => new[] { t, t }).ToArray();
            PrkTimesteps = prk2.Skip(1).Take(prk2.Length - 2).Reverse().ToArray();
            // plms = ts[:-3][::-1]
            PlmsTimesteps = ts.Take(Math.Max(0, ts.Length - 3)).Reverse().ToArray();
        }
        Timesteps = PrkTimesteps.Concat(PlmsTimesteps).ToArray();

        ResetState();
    }

    private void ResetState()
    {
        foreach (var e in _ets) e.Dispose();
        _ets.Clear();
        Counter = 0;
        _curModelOutput?.Dispose();
        _curModelOutput = null;
        // diffusers does not reset cur_sample here; it is always set before it is read
    }

    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator = null)
    {
        if (NumInferenceSteps is null)
            throw new InvalidOperationException("Number of inference steps is not set: call SetTimesteps first");
        return Counter < PrkTimesteps.Length && !SkipPrkSteps
            ? StepPrk(modelOutput, timestep, sample)
            : StepPlms(modelOutput, timestep, sample);
    }

    private Tensor StepPrk(Tensor modelOutput, long timestep, Tensor sample)
    {
        int steps = NumInferenceSteps!.Value;
        long diffToPrev = Counter % 2 != 0 ? 0 : NumTrainTimesteps / steps / 2;
        long prevTimestep = timestep - diffToPrev;
        timestep = PrkTimesteps[Counter / 4 * 4];

        using var scope = NewDisposeScope();
        if (Counter % 4 == 0)
        {
            // cur_model_output += 1/6 * model_output (cur_model_output is the int 0 here: 0 + x); ets.append(model_output); cur_sample = sample
            var add = modelOutput * (1.0 / 6);
            SetCurModelOutput(_curModelOutput is null ? add + 0 : _curModelOutput.add_(add));
            _ets.Add(Keep(modelOutput));
            SetCurSample(Keep(sample));
        }
        else if ((Counter - 1) % 4 == 0 || (Counter - 2) % 4 == 0)
        {
            var add = modelOutput * (1.0 / 3);
            SetCurModelOutput(_curModelOutput is null ? add + 0 : _curModelOutput.add_(add));
        }
        else if ((Counter - 3) % 4 == 0)
        {
            var add = modelOutput * (1.0 / 6);
            modelOutput = _curModelOutput is null ? add + 0 : _curModelOutput + add;
            _curModelOutput?.Dispose();
            _curModelOutput = null;
        }

        var curSample = _curSample ?? sample;
        var prevSample = GetPrevSample(curSample, timestep, prevTimestep, modelOutput);
        Counter++;
        return prevSample.MoveToOuterDisposeScope();
    }

    private Tensor StepPlms(Tensor modelOutput, long timestep, Tensor sample)
    {
        if (!SkipPrkSteps && _ets.Count < 3)
            throw new InvalidOperationException("PNDMScheduler can only run PLMS steps after at least 12 PRK iterations");
        int steps = NumInferenceSteps!.Value;
        long prevTimestep = timestep - NumTrainTimesteps / steps;

        using var scope = NewDisposeScope();
        Tensor? released = null;
        if (Counter != 1)
        {
            // ets = ets[-3:]; ets.append(model_output)
            while (_ets.Count > 3) { _ets[0].Dispose(); _ets.RemoveAt(0); }
            _ets.Add(Keep(modelOutput));
        }
        else
        {
            prevTimestep = timestep;
            timestep = timestep + NumTrainTimesteps / steps;
        }

        int n = _ets.Count;
        if (n == 1 && Counter == 0)
        {
            SetCurSample(Keep(sample));
        }
        else if (n == 1 && Counter == 1)
        {
            modelOutput = (modelOutput + _ets[^1]) / 2;
            // sample = cur_sample; cur_sample = None (our kept reference is released when this step ends)
            released = _curSample ?? throw new InvalidOperationException("PNDM: no current sample kept from the first step");
            _curSample = null;
            sample = released;
        }
        else if (n == 2)
        {
            modelOutput = (3 * _ets[^1] - _ets[^2]) / 2;
        }
        else if (n == 3)
        {
            modelOutput = (23 * _ets[^1] - 16 * _ets[^2] + 5 * _ets[^3]) / 12;
        }
        else
        {
            modelOutput = (1.0 / 24) * (55 * _ets[^1] - 59 * _ets[^2] + 37 * _ets[^3] - 9 * _ets[^4]);
        }

        var prevSample = GetPrevSample(sample, timestep, prevTimestep, modelOutput);
        released?.Dispose();
        Counter++;
        return prevSample.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Formula (9) of the PNDM paper, as <c>_get_prev_sample</c>: with 0-dim float32 alphas,
    /// sample_coeff = (a_prev / a_t) ** 0.5;
    /// denom = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5;
    /// prev = sample_coeff * sample - (a_prev - a_t) * model_output / denom.
    /// </summary>
    private Tensor GetPrevSample(Tensor sample, long timestep, long prevTimestep, Tensor modelOutput)
    {
        using var scope = NewDisposeScope();
        var alphaProdT = AlphasCumprod[timestep];
        var alphaProdTPrev = prevTimestep >= 0 ? AlphasCumprod[prevTimestep] : _finalAlphaCumprod.alias();
        var betaProdT = 1 - alphaProdT;
        var betaProdTPrev = 1 - alphaProdTPrev;

        if (PredictionType == "v_prediction")
            modelOutput = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;

        var sampleCoeff = (alphaProdTPrev / alphaProdT).pow(0.5);
        var modelOutputDenomCoeff = alphaProdT * betaProdTPrev.pow(0.5) + (alphaProdT * betaProdT * alphaProdTPrev).pow(0.5);
        var prevSample = sampleCoeff * sample - (alphaProdTPrev - alphaProdT) * modelOutput / modelOutputDenomCoeff;
        return prevSample.MoveToOuterDisposeScope();
    }

    private void SetCurModelOutput(Tensor t)
    {
        if (!ReferenceEquals(t, _curModelOutput))
        {
            _curModelOutput?.Dispose();
            _curModelOutput = t.DetachFromDisposeScope();
        }
    }

    private void SetCurSample(Tensor kept)
    {
        _curSample?.Dispose();
        _curSample = kept;
    }

    public override void Dispose()
    {
        ResetState();
        _curSample?.Dispose();
        _curSample = null;
        _finalAlphaCumprod.Dispose();
        base.Dispose();
    }
}
