using TorchSharp;
var g = new torch.Generator(17);
var t = torch.randn(new long[]{1,4,2,2}, generator: g);
Console.WriteLine(string.Join(",", t.data<float>().ToArray()));
