namespace DiffusionLens.Findings;

/// <summary>A sweep runner that can name the model it would load by its weights (<see cref="ModelHash"/>). The audit
/// keys run results by it; a runner without it (a test fake) keys them by the model folder's path instead.</summary>
internal interface IModelHasher
{
    string ModelHash(string modelDir, string? variant);
}
