"""Records Diffusion Lens parity references with real diffusers/transformers (`lens-make-reference real ...`), for the
DiffusionLens.Testing helpers of Diffusion Lens for .NET."""

__version__ = "0.1.0"
