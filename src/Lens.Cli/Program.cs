using DiffusionLens;
using DiffusionLens.Cli;
namespace DiffusionLens.Cli
{
    internal static partial class Program
    {
        public static readonly ICommand[] Commands =
        {
            new Commands.SweepCommand(),
            new Commands.EncodeCommand(),
            new Commands.TokenizeCommand(),
            new Commands.JudgeCommand(),
            new Commands.AuditCommand(),
            new Commands.HumanOrderCommand(),
            new Commands.InfoCommand(),
        };

        public static int Main(string[] args)
        {
            // libtorch's native NNPACK warnings are dropped from stderr; every other line is forwarded, and the
            // forwarder is drained before the process exits
            NativeStderrFilter.Install();
            try
            {
                return MainCore(args);
            }
            finally
            {
                NativeStderrFilter.Shutdown();
            }
        }

        private static int MainCore(string[] args)
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.WriteLine("lens — Diffusion Lens for .NET\n\nusage: lens COMMAND [options]   (lens COMMAND --help for options)\n\ncommands:");
                foreach (var c in Commands) Console.WriteLine($"  {c.Name,-10} {c.Summary}");
                Console.WriteLine($"\nexit codes: {ExitCodes.Describe}");
                return args.Length == 0 ? ExitCodes.Usage : ExitCodes.Ok;
            }
            var cmd = Commands.FirstOrDefault(c => c.Name == args[0]);
            if (cmd is null)
            {
                Console.Error.WriteLine($"lens: error: unknown command '{args[0]}'; commands are {string.Join(", ", Commands.Select(c => c.Name))}");
                return ExitCodes.Usage;
            }
            var rest = args.Skip(1).ToList();
            if (rest.Contains("--help") || rest.Contains("-h"))
            {
                Console.WriteLine(cmd.Usage);
                return ExitCodes.Ok;
            }
            Console.CancelKeyPress += OnCancel;
            try
            {
                return Run(cmd, rest, Console.Error);
            }
            finally
            {
                Console.CancelKeyPress -= OnCancel;
            }
        }

        /// <summary>
        /// Runs one command and turns every failure into one line on <paramref name="err"/> and an exit code
        /// (<see cref="ExitCodes"/>): never a stack trace.
        /// </summary>
        public static int Run(ICommand cmd, IReadOnlyList<string> args, TextWriter err)
        {
            try
            {
                return cmd.Run(args);
            }
            catch (Exception e)
            {
                var (code, message) = Failure.Describe(e, args);
                err.WriteLine($"lens {cmd.Name}: error: {message}");
                return code;
            }
        }

        private static void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            if (Interrupt.Request())
            {
                // first Ctrl-C: stop at the next step; the run removes its partial output and exits 130
                e.Cancel = true;
                Console.Error.WriteLine("lens: interrupted: stopping after the current step (Ctrl-C again to stop now)");
                return;
            }
            foreach (var p in Interrupt.RemovePartials()) Console.Error.WriteLine($"lens: interrupted: removed the partial output {p}");
            e.Cancel = true;
            Environment.Exit(ExitCodes.Interrupted);
        }
    }
}
