using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Loading;

/// <summary>
/// Copies checkpoint tensors into already built parameters, several tensors at a time on worker threads (one file
/// handle per file shared by all of them, positional reads, so shards are read in parallel too):
/// <list type="bullet">
/// <item>a CPU parameter of the file's dtype is read from disk straight into its own storage (one copy: page cache to parameter);</item>
/// <item>otherwise the bytes are read into a per-worker staging buffer (page-locked when the target is a GPU), uploaded in
/// the file's dtype (fewer bytes over PCIe for a float16 file) and converted to the parameter's dtype on its device.</item>
/// </list>
/// Host memory stays flat: a worker holds at most one tensor's bytes.
/// </summary>
internal static class WeightCopier
{
    public sealed record Job(Tensor Target, SafetensorsFile File, SafetensorsEntry Entry)
    {
        public long Bytes => Entry.End - Entry.Begin;
    }

    /// <summary>Worker threads (LENS_LOAD_THREADS overrides; default up to 8, never more than the cores).</summary>
    public static int Workers(int jobs)
    {
        int n = int.TryParse(Environment.GetEnvironmentVariable("LENS_LOAD_THREADS"), out var v) && v > 0
            ? v : Math.Min(8, Environment.ProcessorCount);
        return Math.Max(1, Math.Min(n, jobs));
    }

    public static void CopyAll(IReadOnlyList<Job> jobs)
    {
        if (jobs.Count == 0) return;
        var ordered = jobs.OrderByDescending(j => j.Bytes).ToArray(); // largest first: the workers finish together
        var handles = new Dictionary<SafetensorsFile, SafeFileHandle>(ReferenceEqualityComparer.Instance);
        try
        {
            foreach (var j in ordered)
                if (!handles.ContainsKey(j.File)) handles[j.File] = j.File.OpenForReading();
            int next = -1;
            var errors = new ConcurrentQueue<Exception>();
            void Work()
            {
                using var noGrad = torch.no_grad();
                var staging = new Dictionary<ScalarType, Tensor>();
                try
                {
                    int i;
                    while (errors.IsEmpty && (i = Interlocked.Increment(ref next)) < ordered.Length)
                        Copy(ordered[i], handles[ordered[i].File], staging);
                }
                catch (Exception e) { errors.Enqueue(e); }
                finally { foreach (var b in staging.Values) b.Dispose(); }
            }
            int workers = Workers(ordered.Length);
            if (workers == 1) Work();
            else
            {
                var threads = Enumerable.Range(0, workers).Select(_ => new Thread(Work) { IsBackground = true }).ToList();
                threads.ForEach(t => t.Start());
                threads.ForEach(t => t.Join());
            }
            if (errors.TryDequeue(out var first))
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
        finally
        {
            foreach (var h in handles.Values) h.Dispose();
        }
    }

    private static void Copy(Job job, SafeFileHandle handle, Dictionary<ScalarType, Tensor> staging)
    {
        var target = job.Target;
        var fileType = SafetensorsFile.ToScalarType(job.Entry.DType);
        bool onCpu = target.device_type == DeviceType.CPU;
        if (onCpu && target.dtype == fileType && target.is_contiguous())
        {
            job.File.ReadInto(job.Entry, target, handle);
            return;
        }
        long numel = job.Entry.NumElements;
        if (!staging.TryGetValue(fileType, out var buffer) || buffer.shape[0] < numel)
        {
            buffer?.Dispose();
            using var fresh = torch.empty(new[] { Math.Max(numel, 1L << 20) }, dtype: fileType);
            buffer = onCpu ? fresh.alias() : fresh.pin_memory(); // page-locked: a real DMA upload, no driver bounce copy
            staging[fileType] = buffer;
        }
        using var flat = buffer.narrow(0, 0, numel);
        using var src = flat.view(job.Entry.Shape);
        job.File.ReadInto(job.Entry, src, handle);
        if (onCpu || target.dtype == fileType)
        {
            target.copy_(src); // a blocking copy: the staging buffer is free again when it returns
            return;
        }
        // upload in the file's dtype, convert on the device
        using var uploaded = src.to(target.device);
        target.copy_(uploaded);
    }
}
