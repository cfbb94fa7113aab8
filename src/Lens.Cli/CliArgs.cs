using System.Globalization;

namespace DiffusionLens.Cli;

/// <summary>
/// Parsed <c>--name value</c> options of one command. Each command declares the options it takes; anything else,
/// a missing value or a malformed number is a <see cref="LensException"/> naming the option.
/// </summary>
internal sealed class CliArgs
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly string _command;

    private CliArgs(string command) => _command = command;

    /// <param name="options">option names the command accepts, without the leading "--"</param>
    /// <param name="flags">options that take no value (e.g. "no-progress")</param>
    public static CliArgs Parse(string command, IReadOnlyList<string> args, IEnumerable<string> options, IEnumerable<string>? flags = null)
    {
        var known = new HashSet<string>(options);
        var flagSet = new HashSet<string>(flags ?? Array.Empty<string>());
        var result = new CliArgs(command);
        for (int i = 0; i < args.Count; i++)
        {
            var a = args[i];
            if (!a.StartsWith("--")) throw new LensException($"unexpected argument '{a}' (options start with --)");
            var name = a[2..];
            string? inline = null;
            int eq = name.IndexOf('=');
            if (eq >= 0) { inline = name[(eq + 1)..]; name = name[..eq]; }
            if (flagSet.Contains(name))
            {
                result._values[name] = inline ?? "true";
                continue;
            }
            if (!known.Contains(name))
                throw new LensException($"unknown option '--{name}'; options are {string.Join(", ", known.Concat(flagSet).Select(o => "--" + o))}");
            if (inline is null)
            {
                if (i + 1 >= args.Count) throw new LensException($"option '--{name}' needs a value");
                inline = args[++i];
            }
            if (result._values.ContainsKey(name)) throw new LensException($"option '--{name}' given twice");
            result._values[name] = inline;
        }
        return result;
    }

    public bool Has(string name) => _values.ContainsKey(name);
    public string? Get(string name) => _values.TryGetValue(name, out var v) ? v : null;
    public string Get(string name, string dflt) => Get(name) ?? dflt;
    public string Require(string name) => Get(name) ?? throw new LensException($"option '--{name}' is required");
    public bool Flag(string name) => Get(name) is string v && v != "false";

    public int Int(string name, int dflt) => Get(name) is string v ? ParseInt(name, v) : dflt;
    public int? IntOrNull(string name) => Get(name) is string v ? ParseInt(name, v) : null;
    public long Long(string name, long dflt) =>
        Get(name) is string v ? (long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var x) ? x : throw Bad(name, v, "an integer")) : dflt;
    public double Double(string name, double dflt) => Get(name) is string v ? ParseDouble(name, v) : dflt;
    public double? DoubleOrNull(string name) => Get(name) is string v ? ParseDouble(name, v) : null;
    public bool Bool(string name, bool dflt) => Get(name) switch
    {
        null => dflt,
        "true" or "1" or "yes" => true,
        "false" or "0" or "no" => false,
        var v => throw Bad(name, v, "true or false"),
    };

    private int ParseInt(string name, string v) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var x) ? x : throw Bad(name, v, "an integer");
    private double ParseDouble(string name, string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && double.IsFinite(x) ? x : throw Bad(name, v, "a number");
    private LensException Bad(string name, string v, string what) => new($"option '--{name}' must be {what}, got '{v}'");
}
