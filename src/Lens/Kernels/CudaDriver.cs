using System.Runtime.InteropServices;

namespace DiffusionLens.Kernels;

/// <summary>
/// The few CUDA driver API calls the fused kernels need (libcuda.so.1, which every CUDA host has): the device's
/// primary context (the one PyTorch's runtime uses, so pointers from TorchSharp's CUDA tensors are valid in it), loading
/// a compiled module and launching its kernels on the legacy default stream, the stream TorchSharp's operations run on,
/// so a launch is ordered with them without any synchronisation.
/// </summary>
internal static unsafe class CudaDriver
{
    private const string Lib = "libcuda.so.1";

    [DllImport(Lib)] private static extern int cuInit(uint flags);
    [DllImport(Lib)] private static extern int cuDeviceGet(out int device, int ordinal);
    [DllImport(Lib)] private static extern int cuDeviceGetAttribute(out int value, int attribute, int device);
    [DllImport(Lib)] private static extern int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [DllImport(Lib)] private static extern int cuCtxGetCurrent(out IntPtr context);
    [DllImport(Lib)] private static extern int cuCtxSetCurrent(IntPtr context);
    [DllImport(Lib)] private static extern int cuModuleLoadData(out IntPtr module, byte* image);
    [DllImport(Lib)] private static extern int cuModuleGetFunction(out IntPtr function, IntPtr module, [MarshalAs(UnmanagedType.LPStr)] string name);
    [DllImport(Lib)] private static extern int cuGetErrorString(int error, out IntPtr text);
    [DllImport(Lib)]
    private static extern int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY,
        uint blockZ, uint sharedBytes, IntPtr stream, IntPtr* parameters, IntPtr* extra);

    private const int ComputeCapabilityMajor = 75, ComputeCapabilityMinor = 76;

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the call and the driver's message unless <paramref name="rc"/> is 0.</summary>
    public static void Check(int rc, string call)
    {
        if (rc == 0) return;
        string text = "";
        try { if (cuGetErrorString(rc, out var p) == 0 && p != IntPtr.Zero) text = Marshal.PtrToStringAnsi(p) ?? ""; }
        catch (Exception) { /* the code alone */ }
        throw new InvalidOperationException($"{call} failed: CUDA driver error {rc}{(text.Length > 0 ? $" ({text})" : "")}");
    }

    /// <summary>The primary context of CUDA device <paramref name="ordinal"/> and its compute capability (e.g. 90).</summary>
    public static (IntPtr Context, int Capability) PrimaryContext(int ordinal)
    {
        Check(cuInit(0), "cuInit");
        Check(cuDeviceGet(out int device, ordinal), "cuDeviceGet");
        Check(cuDeviceGetAttribute(out int major, ComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        Check(cuDeviceGetAttribute(out int minor, ComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        Check(cuDevicePrimaryCtxRetain(out var context, device), "cuDevicePrimaryCtxRetain");
        return (context, major * 10 + minor);
    }

    /// <summary>Makes <paramref name="context"/> current on this thread (TorchSharp may call from any thread).</summary>
    public static void MakeCurrent(IntPtr context)
    {
        Check(cuCtxGetCurrent(out var current), "cuCtxGetCurrent");
        if (current != context) Check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
    }

    /// <summary>Loads a cubin or NUL-terminated PTX image into the current context.</summary>
    public static IntPtr LoadModule(byte[] image)
    {
        fixed (byte* p = image)
        {
            Check(cuModuleLoadData(out var module, p), "cuModuleLoadData");
            return module;
        }
    }

    public static IntPtr Function(IntPtr module, string name)
    {
        Check(cuModuleGetFunction(out var f, module, name), $"cuModuleGetFunction({name})");
        return f;
    }

    /// <summary>Launches a 1-D grid on the legacy default stream; <paramref name="args"/> holds each parameter in an 8-byte slot.</summary>
    public static void Launch(IntPtr function, long blocks, int threads, ReadOnlySpan<long> args)
    {
        if (blocks < 1 || blocks > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(blocks), $"{blocks} blocks");
        long* slots = stackalloc long[args.Length];
        IntPtr* pointers = stackalloc IntPtr[args.Length];
        for (int i = 0; i < args.Length; i++) { slots[i] = args[i]; pointers[i] = (IntPtr)(slots + i); }
        Check(cuLaunchKernel(function, (uint)blocks, 1, 1, (uint)threads, 1, 1, 0, IntPtr.Zero, pointers, null), "cuLaunchKernel");
    }
}
