global using DiffusionLens.Testing;
