using System.Runtime.InteropServices;
using System.Text;

namespace DiffusionLens.Cli;

/// <summary>
/// Drops libtorch's native "Could not initialize NNPACK! Reason: Unsupported hardware." warnings from stderr
/// (written by native code straight to fd 2, with no switch in TorchSharp) and forwards every other byte.
/// On Linux, <see cref="Install"/> saves the real stderr (a dup of fd 2), points fd 2 at a pipe and starts a thread
/// that copies the pipe to the saved fd line by line, skipping the NNPACK lines. The managed
/// <see cref="Console.Error"/> writes to the saved fd directly, so the CLI's own messages never depend on the
/// forwarder. <see cref="Shutdown"/> (called when Main returns and on process exit) puts fd 2 back, which closes the
/// pipe's only write end, and waits for the forwarder to drain what native code wrote.
/// Set LENS_NATIVE_STDERR=raw to leave stderr untouched.
/// </summary>
internal static class NativeStderrFilter
{
    private const int F_DUPFD_CLOEXEC = 1030;
    private const int O_CLOEXEC = 0x80000;
    private const int EINTR = 4;

    [DllImport("libc", SetLastError = true)] private static extern int pipe2(int[] fds, int flags);
    [DllImport("libc", SetLastError = true)] private static extern int fcntl(int fd, int cmd, int arg);
    [DllImport("libc", SetLastError = true)] private static extern int dup2(int oldFd, int newFd);
    [DllImport("libc", SetLastError = true)] private static extern int close(int fd);
    [DllImport("libc", SetLastError = true)] private static extern nint read(int fd, byte[] buf, nint count);
    [DllImport("libc", SetLastError = true)] private static extern nint write(int fd, byte[] buf, nint count);

    private static readonly object Gate = new();
    private static int _saved = -1, _readEnd = -1;
    private static Thread? _forwarder;

    /// <summary>True for a line this filter drops: libtorch's NNPACK initialisation warning.</summary>
    public static bool IsNoise(string line) => line.Contains("Could not initialize NNPACK", StringComparison.Ordinal);

    public static void Install()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("LENS_NATIVE_STDERR") == "raw") return;
        lock (Gate)
        {
            if (_forwarder is not null) return;
            try
            {
                // Console caches whether stderr is a terminal on first use: read it while fd 2 is still the real one
                _ = Console.IsErrorRedirected;
                int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
                if (saved < 0) return;
                var fds = new int[2];
                if (pipe2(fds, O_CLOEXEC) != 0) { close(saved); return; }
                // managed writes go to the real stderr, not through the pipe
                var writer = new StreamWriter(new FdStream(saved), new UTF8Encoding(false)) { AutoFlush = true };
                if (dup2(fds[1], 2) < 0) { close(fds[0]); close(fds[1]); close(saved); return; }
                close(fds[1]); // fd 2 is now the pipe's only write end (dup2 clears CLOEXEC: children share it)
                Console.SetError(TextWriter.Synchronized(writer));
                _saved = saved;
                _readEnd = fds[0];
                _forwarder = new Thread(Forward) { IsBackground = true, Name = "native-stderr-filter" };
                _forwarder.Start();
                AppDomain.CurrentDomain.ProcessExit += (_, _) => Shutdown();
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // no libc to call: leave stderr as it is
            }
        }
    }

    /// <summary>Restores fd 2 and waits (at most a few seconds, e.g. if a child process still holds the pipe)
    /// until every line native code wrote has been forwarded. Idempotent.</summary>
    public static void Shutdown()
    {
        Thread? t;
        lock (Gate)
        {
            t = _forwarder;
            if (t is null || _saved < 0) return;
            Console.Error.Flush();
            dup2(_saved, 2); // closes the pipe's write end: the forwarder reads EOF after the last byte
        }
        t.Join(TimeSpan.FromSeconds(5));
    }

    private static void Forward()
    {
        var buf = new byte[8192];
        var line = new List<byte>(256);
        while (true)
        {
            nint n = read(_readEnd, buf, buf.Length);
            if (n < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
            if (n <= 0) break;
            for (int i = 0; i < n; i++)
            {
                line.Add(buf[i]);
                if (buf[i] == (byte)'\n' || line.Count >= 65536) Emit(line);
            }
        }
        Emit(line);
        close(_readEnd);
    }

    private static void Emit(List<byte> line)
    {
        if (line.Count == 0) return;
        var bytes = line.ToArray();
        line.Clear();
        if (!IsNoise(Encoding.UTF8.GetString(bytes))) WriteAll(_saved, bytes, 0, bytes.Length);
    }

    /// <summary>write(2) until done: the fd's shared offset advances (a FileStream would pwrite at its own offset
    /// and overwrite what others appended to a redirected stderr file).</summary>
    private static void WriteAll(int fd, byte[] bytes, int offset, int count)
    {
        while (count > 0)
        {
            var chunk = offset == 0 && count == bytes.Length ? bytes : bytes[offset..(offset + count)];
            nint w = write(fd, chunk, chunk.Length);
            if (w < 0 && Marshal.GetLastPInvokeError() == EINTR) continue;
            if (w <= 0) return;
            offset += (int)w;
            count -= (int)w;
        }
    }

    private sealed class FdStream(int fd) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => WriteAll(fd, buffer, offset, count);
    }
}
