using System.Diagnostics;
using System.Text;
using DiffusionLens.Cli;
using DiffusionLens.Cli.Commands;
using Xunit;

namespace DiffusionLens.Tests.Parity;

/// <summary>
/// `lens encode` on corrupted text-encoder weights: every mutant either loads (exit 0) or fails with one
/// "lens encode: error:" line and exit 2 or 4 — never a stack trace, a hang or a crash. Runs the command in process
/// (<see cref="Program.Run"/>, what Main runs) for speed; the mutants come from a seeded RNG, so a failure reproduces.
/// </summary>
public class CliFuzzTests(ITestOutputHelper output)
{
    private const int Seed = 20240517;
    private const int MinMutants = 150;
    private const int MaxMutants = 2000;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(25);

    [Fact]
    public void EncodeOnMutatedTextEncoderWeightsFailsCleanlyOrLoads()
    {
        var model = CliRunner.CopyModel("sd-tiny-b");
        var weights = Path.Combine(model, "text_encoder", "model.safetensors");
        var original = File.ReadAllBytes(weights);
        var outFile = CliRunner.TempPath("fuzz-enc") + ".safetensors";
        var rng = new Random(Seed);
        var tally = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var failures = new List<string>();
        var messages = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var clock = Stopwatch.StartNew();
        int n = 0;
        try
        {
            while (n < MaxMutants && (n < MinMutants || clock.Elapsed < Budget))
            {
                var (kind, bytes) = Mutate(original, rng);
                File.WriteAllBytes(weights, bytes);
                var err = new StringWriter();
                int code = Program.Run(new EncodeCommand(), new[] { "--model", model, "--prompt", "a photo of a cat", "--out", outFile, "--overwrite" }, err);
                var lines = err.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToList();
                tally[$"{kind} -> exit {code}"] = tally.GetValueOrDefault($"{kind} -> exit {code}") + 1;
                bool ok = code == 0
                    ? lines.Count == 0
                    : (code is ExitCodes.Usage or ExitCodes.RunFailed)
                      && lines.Count == 1 && lines[0].StartsWith("lens encode: error:", StringComparison.Ordinal)
                      && !lines.Any(l => l.StartsWith("   at ", StringComparison.Ordinal));
                if (!ok) failures.Add($"mutant {n} ({kind}): exit {code}, stderr:\n{err}");
                if (code != 0 && lines.Count > 0)
                {
                    // the message with its numbers blanked, to see which checks the mutants hit
                    var shape = new string(lines[0].Select(c => char.IsDigit(c) ? '#' : c).ToArray());
                    shape = shape.Length > 160 ? shape[..160] : shape;
                    messages[$"exit {code}: {shape}"] = messages.GetValueOrDefault($"exit {code}: {shape}") + 1;
                }
                n++;
            }
        }
        finally
        {
            Directory.Delete(model, true);
            if (File.Exists(outFile)) File.Delete(outFile);
        }
        output.WriteLine($"{n} mutants in {clock.Elapsed.TotalSeconds:F1} s (seed {Seed})");
        foreach (var (k, v) in tally) output.WriteLine($"  {v,5}  {k}");
        output.WriteLine("messages:");
        foreach (var (k, v) in messages) output.WriteLine($"  {v,5}  {k}");
        Assert.True(n >= MinMutants, $"only {n} mutants ran");
        Assert.True(failures.Count == 0, $"{failures.Count} of {n} mutants did not fail cleanly:\n{string.Join("\n", failures.Take(5))}");
    }

    /// <summary>One mutant of a safetensors file: a bit flip (length prefix, JSON header or data), a truncation, or
    /// an edit of the header text (a digit of a shape/offset, a dtype).</summary>
    private static (string Kind, byte[] Bytes) Mutate(byte[] original, Random rng)
    {
        var b = (byte[])original.Clone();
        long headerLen = BitConverter.ToInt64(original, 0);
        int headerEnd = (int)Math.Min(8 + headerLen, original.Length);
        switch (rng.Next(6))
        {
            case 0:
            {
                int at = rng.Next(8);
                b[at] ^= (byte)(1 << rng.Next(8));
                return ("bitflip-length", b);
            }
            case 1:
            {
                int at = 8 + rng.Next(headerEnd - 8);
                b[at] ^= (byte)(1 << rng.Next(8));
                return ("bitflip-header", b);
            }
            case 2:
            {
                int at = rng.Next(b.Length);
                b[at] ^= (byte)(1 << rng.Next(8));
                return ("bitflip-anywhere", b);
            }
            case 3:
                return ("truncate", b[..rng.Next(b.Length)]);
            case 4:
            {
                // a digit of the header (a shape, an offset or the metadata) replaced by another digit
                var digits = Enumerable.Range(8, headerEnd - 8).Where(i => b[i] is >= (byte)'0' and <= (byte)'9').ToList();
                int at = digits[rng.Next(digits.Count)];
                b[at] = (byte)('0' + (b[at] - '0' + 1 + rng.Next(9)) % 10);
                return ("header-digit", b);
            }
            default:
            {
                // a dtype replaced by another (valid or not), the 8-byte length rewritten to the new header's size
                var header = Encoding.UTF8.GetString(b, 8, headerEnd - 8);
                var hits = System.Text.RegularExpressions.Regex.Matches(header, "\"dtype\"\\s*:\\s*\"([^\"]*)\"").Select(m => m.Groups[1]).ToList();
                if (hits.Count == 0) throw new InvalidOperationException("the fixture's header names no dtype");
                string[] dtypes = { "F16", "BF16", "F32", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "XYZ", "" };
                var g = hits[rng.Next(hits.Count)];
                var edited = header[..g.Index] + dtypes[rng.Next(dtypes.Length)] + header[(g.Index + g.Length)..];
                var hb = Encoding.UTF8.GetBytes(edited);
                var result = new byte[8 + hb.Length + (b.Length - headerEnd)];
                BitConverter.GetBytes((long)hb.Length).CopyTo(result, 0);
                hb.CopyTo(result, 8);
                Array.Copy(b, headerEnd, result, 8 + hb.Length, b.Length - headerEnd);
                return ("header-dtype", result);
            }
        }
    }
}
