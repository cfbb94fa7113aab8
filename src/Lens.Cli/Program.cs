using DiffusionLens;
using DiffusionLens.Cli;
namespace DiffusionLens.Cli
{
    public static partial class Program
    {
        public static readonly ICommand[] Commands =
        {
            new Commands.SweepCommand(),
            new Commands.EncodeCommand(),
            new Commands.TokenizeCommand(),
            new Commands.JudgeCommand(),
            new Commands.AuditCommand(),
            new Commands.InfoCommand(),
        };

        public static int Main(string[] args)
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.WriteLine("lens — Diffusion Lens for .NET\n\nusage: lens COMMAND [options]   (lens COMMAND --help for options)\n\ncommands:");
                foreach (var c in Commands) Console.WriteLine($"  {c.Name,-10} {c.Summary}");
                return args.Length == 0 ? 2 : 0;
            }
            var cmd = Commands.FirstOrDefault(c => c.Name == args[0]);
            if (cmd is null)
            {
                Console.Error.WriteLine($"lens: unknown command '{args[0]}'; commands are {string.Join(", ", Commands.Select(c => c.Name))}");
                return 2;
            }
            var rest = args.Skip(1).ToList();
            if (rest.Contains("--help") || rest.Contains("-h"))
            {
                Console.WriteLine(cmd.Usage);
                return 0;
            }
            try
            {
                return cmd.Run(rest);
            }
            catch (LensException e)
            {
                Console.Error.WriteLine($"lens {cmd.Name}: error: {e.Message}");
                return 1;
            }
        }
    }
}
