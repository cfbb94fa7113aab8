using System.Runtime.CompilerServices;
using DiffusionLens.Testing;

namespace DiffusionLens.Tests.Parity;

internal static class TorchRuntimeInit
{
    /// <summary>Tests call TorchSharp before touching the library: find libtorch first (managed-backend builds); this
    /// repository's approved snapshots live in tests/Parity/Snapshots.</summary>
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize()
    {
        TorchRuntime.Preload();
        ImageSnapshot.Folder = Path.Combine(ReferenceData.RepoRoot, "tests", "Parity", "Snapshots");
    }
}
