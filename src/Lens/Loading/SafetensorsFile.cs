using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusionLens.Loading;

/// <summary>One tensor's entry in a safetensors header.</summary>
internal sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End, string File)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Reads a <c>.safetensors</c> file lazily: the header is parsed and validated up front, each tensor is read from disk
/// only when asked for, so a model larger than memory is never held twice.
/// </summary>
internal sealed class SafetensorsFile
{
    public string Path { get; }
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries => _entries;
    public IReadOnlyDictionary<string, string> Metadata { get; }
    private readonly Dictionary<string, SafetensorsEntry> _entries = new();
    private readonly long _dataStart;
    /// <summary>The reference implementation's limit on the JSON header (100 MB).</summary>
    public const ulong MaxHeaderBytes = 100_000_000;
    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    public static int DTypeSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => throw new LensException($"unsupported safetensors dtype '{dtype}'"),
    };

    public static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F64" => ScalarType.Float64,
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new LensException($"unsupported safetensors dtype '{dtype}'"),
    };

    public static string FromScalarType(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new LensException($"cannot write tensors of type {t} to safetensors"),
    };

    public SafetensorsFile(string path)
    {
        Path = path;
        if (!System.IO.File.Exists(path)) throw new LensException($"weights file not found: {path}");
        using var fs = System.IO.File.OpenRead(path);
        long fileLength = fs.Length;
        if (fileLength < 8) throw new LensException($"corrupt safetensors file {path}: {fileLength} bytes, too short for a header");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong headerLen = BitConverter.ToUInt64(lenBytes);
        if (headerLen > MaxHeaderBytes)
            throw new LensException($"corrupt safetensors file {path}: header length {headerLen} is over the {MaxHeaderBytes}-byte limit");
        if (headerLen < 2 || headerLen > (ulong)(fileLength - 8))
            throw new LensException($"corrupt safetensors file {path}: header length {headerLen} does not fit a file of {fileLength} bytes");
        var header = new byte[headerLen];
        fs.ReadExactly(header);
        _dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - _dataStart;

        try { StrictUtf8.GetCharCount(header); }
        catch (DecoderFallbackException) { throw new LensException($"corrupt safetensors file {path}: header is not valid UTF-8"); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (Exception e) when (e is JsonException or ArgumentException or DecoderFallbackException)
        {
            throw new LensException($"corrupt safetensors file {path}: header is not valid JSON ({e.Message})");
        }
        var meta = new Dictionary<string, string>();
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new LensException($"corrupt safetensors file {path}: header is not a JSON object");
            bool seenMeta = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (seenMeta) throw new LensException($"corrupt safetensors file {path}: the header has '__metadata__' twice");
                    seenMeta = true;
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new LensException($"corrupt safetensors file {path}: '__metadata__' is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new LensException($"corrupt safetensors file {path}: metadata '{m.Name}' is not a string");
                        meta[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                if (_entries.ContainsKey(prop.Name))
                    throw new LensException($"corrupt safetensors file {path}: tensor '{prop.Name}' appears twice in the header");
                _entries[prop.Name] = ParseEntry(path, prop, dataLength);
            }
        }
        CheckLayout(path, dataLength);
        Metadata = meta;
    }

    private static SafetensorsEntry ParseEntry(string path, JsonProperty prop, long dataLength)
    {
        string Where() => $"corrupt safetensors file {path}: tensor '{prop.Name}'";
        try
        {
            var v = prop.Value;
            if (v.ValueKind != JsonValueKind.Object) throw new LensException($"{Where()} is not an object");
            var dtype = v.GetProperty("dtype").GetString()!;
            var shape = v.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            var offs = v.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            if (offs.Length != 2) throw new LensException($"{Where()}: data_offsets must be [begin, end]");
            ToScalarType(dtype); // unknown or unsupported dtypes fail here, before any read
            if (shape.Any(d => d < 0)) throw new LensException($"{Where()}: negative dimension in shape [{string.Join(",", shape)}]");
            long bytes;
            try { bytes = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * DTypeSize(dtype)); }
            catch (OverflowException) { throw new LensException($"{Where()}: shape [{string.Join(",", shape)}] is too large"); }
            var e = new SafetensorsEntry(prop.Name, dtype, shape, offs[0], offs[1], path);
            if (e.Begin < 0 || e.End < e.Begin || e.End > dataLength)
                throw new LensException($"{Where()} has data offsets [{e.Begin},{e.End}] outside the file's {dataLength} data bytes (truncated file?)");
            if (e.End - e.Begin != bytes)
                throw new LensException($"{Where()} ({dtype} [{string.Join(",", shape)}]) needs {bytes} bytes but its data offsets [{e.Begin},{e.End}] hold {e.End - e.Begin}");
            return e;
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new LensException($"{Where()}: malformed header entry (needs dtype, shape and data_offsets)");
        }
    }

    /// <summary>As the reference implementation requires: the tensors tile the data section exactly, no overlap, no gap,
    /// nothing after the last one.</summary>
    private void CheckLayout(string path, long dataLength)
    {
        long pos = 0;
        foreach (var e in _entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (e.Begin < pos) throw new LensException($"corrupt safetensors file {path}: tensor '{e.Name}' overlaps the tensor before it (data offsets [{e.Begin},{e.End}])");
            if (e.Begin > pos) throw new LensException($"corrupt safetensors file {path}: a gap of {e.Begin - pos} bytes before tensor '{e.Name}'");
            pos = e.End;
        }
        if (pos != dataLength)
            throw new LensException($"corrupt safetensors file {path}: the tensors cover {pos} of its {dataLength} data bytes");
    }

    /// <summary>Reads one tensor (CPU, in the file's dtype).</summary>
    public Tensor Read(string name)
    {
        if (!_entries.TryGetValue(name, out var e)) throw new LensException($"{Path}: no tensor named '{name}'");
        return Read(e);
    }

    public Tensor Read(SafetensorsEntry e)
    {
        var t = torch.empty(e.Shape, dtype: ToScalarType(e.DType));
        if (e.End > e.Begin) ReadInto(e, t);
        return t;
    }

    /// <summary>Opens the file for positional reads (<see cref="ReadInto"/>); one handle may serve several threads at once.</summary>
    public Microsoft.Win32.SafeHandles.SafeFileHandle OpenForReading() =>
        System.IO.File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);

    /// <summary>
    /// Reads one tensor's bytes from disk straight into <paramref name="destination"/>'s storage (a contiguous CPU tensor
    /// of the entry's size in bytes, any dtype/shape: e.g. a model parameter of the file's dtype, or a staging buffer),
    /// with no intermediate managed buffer.
    /// </summary>
    /// <param name="handle">a handle from <see cref="OpenForReading"/> (null: the file is opened for this read)</param>
    public void ReadInto(SafetensorsEntry e, Tensor destination, Microsoft.Win32.SafeHandles.SafeFileHandle? handle = null)
    {
        long n = e.End - e.Begin;
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous() || destination.NumberOfElements * destination.ElementSize != n)
            throw new ArgumentException($"{Path}: '{e.Name}' ({n} bytes) needs a contiguous CPU tensor of that size");
        if (n == 0) return;
        using var owned = handle is null ? OpenForReading() : null;
        var h = handle ?? owned!;
        using var flat = destination.view(-1);
        long elementSize = destination.ElementSize, perChunk = (1L << 30) / elementSize, done = 0, count = flat.shape[0];
        while (done < count)
        {
            long len = Math.Min(perChunk, count - done);
            using var part = flat.narrow(0, done, len);
            var span = part.bytes;
            long offset = _dataStart + e.Begin + done * elementSize;
            while (!span.IsEmpty)
            {
                int read = RandomAccess.Read(h, span, offset);
                if (read <= 0) throw new LensException($"corrupt safetensors file {Path}: unexpected end of file in tensor '{e.Name}'");
                span = span[read..];
                offset += read;
            }
            done += len;
        }
    }

    /// <summary>Writes tensors (moved to CPU, made contiguous) in the safetensors format, keys in the given order.</summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        var blobs = new List<byte[]>();
        foreach (var (name, tensor) in list)
        {
            using var c = tensor.detach().cpu().contiguous();
            var data = c.bytes.ToArray();
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = FromScalarType(c.dtype),
                ["shape"] = c.shape,
                ["data_offsets"] = new[] { offset, offset + data.Length },
            };
            offset += data.Length;
            blobs.Add(data);
        }
        var json = JsonSerializer.Serialize(header);
        // pad the header with spaces to a multiple of 8 bytes, as the reference implementation does
        int pad = (8 - Encoding.UTF8.GetByteCount(json) % 8) % 8;
        var headerBytes = Encoding.UTF8.GetBytes(json + new string(' ', pad));
        using var fs = System.IO.File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
        fs.Write(headerBytes);
        foreach (var b in blobs) fs.Write(b);
    }
}
