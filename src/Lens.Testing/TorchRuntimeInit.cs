using System.Runtime.CompilerServices;

namespace DiffusionLens.Testing;

internal static class TorchRuntimeInit
{
    /// <summary>Tests call TorchSharp through this assembly before touching the library: find libtorch first (managed TorchSharp).</summary>
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => TorchRuntime.Preload();
}
