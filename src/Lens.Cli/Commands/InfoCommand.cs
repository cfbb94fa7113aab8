using System.Text.Json.Nodes;
using TorchSharp;

namespace DiffusionLens.Cli.Commands;

/// <summary>What this build runs on: the libtorch it loaded, CUDA and cuDNN, the GPU count.</summary>
internal sealed class InfoCommand : ICommand
{
    public string Name => "info";
    public string Summary => "print the runtime this build uses: libtorch source, CUDA, cuDNN, GPUs (JSON)";
    public string Usage => """
        lens info

        Prints {"version", "libtorch", "cuda_available", "cudnn_available", "cuda_devices"} as JSON. A build made with
        -p:TorchBackend=managed finds PyTorch's torch/lib itself (LENS_TORCH_LIB, else the python3 on the PATH).
        """;

    public int Run(IReadOnlyList<string> args)
    {
        CliArgs.Parse(Name, args, Array.Empty<string>());
        bool cuda = torch.cuda.is_available();
        var json = new JsonObject
        {
            ["version"] = typeof(LensException).Assembly.GetName().Version?.ToString(),
            ["libtorch"] = TorchRuntime.Source,
            ["cpu_onednn"] = TorchRuntime.CpuOneDnn,
            ["cuda_alloc_conf"] = TorchRuntime.CudaAllocConf,
            ["cuda_available"] = cuda,
            ["cudnn_available"] = cuda && torch.cuda.is_cudnn_available(),
            ["cuda_devices"] = cuda ? torch.cuda.device_count() : 0,
        };
        Console.WriteLine(json.ToJsonString());
        return 0;
    }
}
