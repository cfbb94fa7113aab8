using DiffusionLens.Sweep;
using Xunit;

namespace DiffusionLens.Tests.Parity;

public class LayerSelectionTests
{
    [Theory]
    [InlineData("all", 4, new[] { 0, 1, 2, 3 })]
    [InlineData("0,3,5", 12, new[] { 0, 3, 5 })]
    [InlineData("0:12:2", 12, new[] { 0, 2, 4, 6, 8, 10 })]
    [InlineData("0:24:2", 24, new[] { 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 })]
    [InlineData("3:", 5, new[] { 3, 4 })]
    [InlineData(":2", 5, new[] { 0, 1 })]
    [InlineData("11", 12, new[] { 11 })]
    public void Parses(string spec, int n, int[] expected) => Assert.Equal(expected, LayerSelection.Parse(spec, n));

    [Theory]
    [InlineData("12", 12, "layer 12 is out of range")]
    [InlineData("-1", 12, "layer -1 is out of range")]
    [InlineData("0:13", 12, "stop 13")]
    [InlineData("0:12:0", 12, "step must be positive")]
    [InlineData("a,b", 12, "'a' is not a layer number")]
    [InlineData("1,1", 12, "listed twice")]
    public void RejectsWithAClearMessage(string spec, int n, string fragment)
    {
        var e = Assert.Throws<LensException>(() => LayerSelection.Parse(spec, n));
        Assert.Contains(fragment, e.Message);
        Assert.Contains($"{n} layers", e.Message);
    }
}
