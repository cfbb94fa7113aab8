using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Schedulers;

/// <summary>
/// How a batch that holds several single-prompt pipeline calls draws its random noise, so that every row gets exactly
/// what its own diffusers call would draw: the batch is a list of groups, each group one call's rows
/// (<c>num_images_per_prompt</c> of them), drawn as that call draws them: one <c>randn</c> of the group's shape from its
/// CPU generator. A group may stand for several calls that draw the same noise (the same seed): it is drawn once and
/// repeated. Rows are in group order.
/// </summary>
internal sealed class NoisePlan
{
    /// <summary>One pipeline call's draw: <paramref name="Rows"/> images from <paramref name="Generator"/>, repeated
    /// <paramref name="Repeat"/> times (calls with identical generators).</summary>
    public sealed record Group(Generator Generator, int Rows, int Repeat = 1);

    public IReadOnlyList<Group> Groups { get; }

    /// <summary>Rows of the whole batch.</summary>
    public int BatchRows => Groups.Sum(g => g.Rows * g.Repeat);

    public NoisePlan(IReadOnlyList<Group> groups)
    {
        if (groups.Count == 0) throw new ArgumentException("a noise plan needs at least one group");
        foreach (var g in groups)
            if (g.Rows < 1 || g.Repeat < 1) throw new ArgumentException($"noise group rows/repeat must be positive (got {g.Rows}x{g.Repeat})");
        Groups = groups;
    }

    /// <summary>Every row from one generator: <paramref name="calls"/> identical calls of <paramref name="rows"/> images each.</summary>
    public static NoisePlan Shared(Generator generator, int rows, int calls) => new([new Group(generator, rows, calls)]);

    /// <summary>
    /// The batch's noise: for each group <c>randn([Rows, ...rowShape])</c> from its generator on the CPU in
    /// <paramref name="dtype"/> (diffusers' <c>randn_tensor</c> with a CPU generator), repeated, concatenated in group
    /// order, moved to <paramref name="device"/>. <paramref name="rowShape"/> is one row's shape (no batch dimension).
    /// </summary>
    public Tensor Draw(long[] rowShape, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>(Groups.Count);
        foreach (var g in Groups)
        {
            var shape = new long[rowShape.Length + 1];
            shape[0] = g.Rows;
            rowShape.CopyTo(shape, 1);
            var noise = torch.randn(shape, dtype: dtype, device: torch.CPU, generator: g.Generator);
            if (g.Repeat > 1)
            {
                var expanded = new long[shape.Length + 1];
                expanded[0] = g.Repeat;
                shape.CopyTo(expanded, 1);
                shape[0] = (long)g.Rows * g.Repeat;
                noise = noise.unsqueeze(0).expand(expanded).reshape(shape);
            }
            parts.Add(noise);
        }
        var all = parts.Count == 1 ? parts[0] : torch.cat(parts, 0);
        return all.to(device).MoveToOuterDisposeScope();
    }

    /// <summary>A copy of a generator in its current state (the generator itself keeps drawing on its own).</summary>
    public static Generator Fork(Generator generator)
    {
        var copy = new Generator(0, torch.CPU);
        using var state = generator.get_state();
        copy.set_state(state);
        return copy;
    }
}
