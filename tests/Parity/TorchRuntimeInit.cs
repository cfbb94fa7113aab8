using System.Runtime.CompilerServices;

namespace DiffusionLens.Tests.Parity;

internal static class TorchRuntimeInit
{
    /// <summary>Tests call TorchSharp before touching the library: find libtorch first (managed-backend builds).</summary>
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => TorchRuntime.Preload();
}
