using System.Runtime.InteropServices;

namespace DiffusionLens.Pipelines;

/// <summary>
/// Free and total memory of the current CUDA device as the driver reports it (<c>cuMemGetInfo_v2</c> from
/// libcuda.so.1, the driver PyTorch's libtorch already runs on): memory PyTorch's caching allocator holds counts as
/// used, as do the CUDA context and other processes. Null where there is no driver or no current context.
/// </summary>
internal static class GpuMemory
{
    [DllImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static extern int CuMemGetInfo(out nuint free, out nuint total);

    public static (long Free, long Total)? Query()
    {
        try
        {
            return CuMemGetInfo(out var free, out var total) == 0 ? ((long)free, (long)total) : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }
}
