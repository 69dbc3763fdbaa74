using System.Runtime.InteropServices;
using Engine.IO;
using Engine.Models.Export.Onnx;
using Google.Protobuf;

namespace Engine.Models.Export;

/// <summary>
/// Builds an ONNX graph node by node: float32 initializers (the weights), int64 constants (shapes, indices), nodes with
/// attributes, the graph's input and output, and writes the model atomically, moving the weights into a sidecar file
/// when they exceed the protobuf limit.
/// </summary>
sealed class OnnxGraph
{
    readonly GraphProto _graph = new() { Name = "peft" };
    readonly Dictionary<string, int> _used = new(StringComparer.Ordinal);

    // A fresh value name from a readable stem (the node's module path).
    string Name(string stem)
    {
        int n = _used.GetValueOrDefault(stem);
        _used[stem] = n + 1;
        return n == 0 ? stem : $"{stem}_{n}";
    }

    /// <summary>A float32 initializer named <paramref name="name"/> [dims].</summary>
    public string Weight(string name, ReadOnlySpan<float> values, params long[] dims)
    {
        long count = dims.Aggregate(1L, (a, b) => a * b);
        if (count != values.Length) throw new ArgumentException($"{name}: {values.Length} values for shape [{string.Join(", ", dims)}]");
        var t = new TensorProto { Name = Name(name), DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values)) };
        t.Dims.AddRange(dims);
        _graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>A [rows, cols] weight transposed to [cols, rows] (for x·Wᵀ as MatMul).</summary>
    public string WeightTransposed(string name, Tensor weight)
    {
        int rows = weight.Shape[0], cols = weight.Shape[1];
        var w = weight.ToArray();
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
        return Weight(name, t, cols, rows);
    }

    /// <summary>A parameter as it is, under its timm name.</summary>
    public string Parameter(Tensor p) => Weight(p.Name ?? "weight", p.ToArray(), [.. p.Shape.Select(d => (long)d)]);

    /// <summary>An int64 constant (a shape, axes, indices) [values.Length], or a scalar when <paramref name="scalar"/>.</summary>
    public string Int64s(string name, long[] values, bool scalar = false)
    {
        var t = new TensorProto { Name = Name(name), DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Int64Data.AddRange(values);
        if (!scalar) t.Dims.Add(values.Length);
        _graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>A float32 scalar constant.</summary>
    public string Scalar(string name, float value)
    {
        var t = new TensorProto { Name = Name(name), DataType = (int)TensorProto.Types.DataType.Float };
        t.FloatData.Add(value);
        _graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>Adds an <paramref name="op"/> node; returns its (first) output's name, derived from <paramref name="stem"/>.</summary>
    public string Node(string op, string stem, string[] inputs, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Name(stem + "/" + op) };
        node.Input.AddRange(inputs);
        string output = Name(stem + "." + op.ToLowerInvariant());
        node.Output.Add(output);
        foreach (var (name, value) in attributes)
        {
            var a = new AttributeProto { Name = name };
            switch (value)
            {
                case long i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
                case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
                case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
                case long[] ints: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ints); break;
                default: throw new ArgumentException($"attribute {name}: unsupported value {value}");
            }
            node.Attribute.Add(a);
        }
        _graph.Node.Add(node);
        return output;
    }

    /// <summary>Declares a float32 graph input or output; a null dimension is the symbolic batch.</summary>
    public void Declare(bool input, string name, params long?[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d is long v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        var info = new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
        (input ? _graph.Input : _graph.Output).Add(info);
    }

    /// <summary>Renames a value to the graph output name (an Identity node).</summary>
    public void Output(string value, string name, params long?[] dims)
    {
        var node = new NodeProto { OpType = "Identity", Name = name + "/Identity" };
        node.Input.Add(value);
        node.Output.Add(name);
        _graph.Node.Add(node);
        Declare(false, name, dims);
    }

    /// <summary>Weight bytes held by the initializers.</summary>
    public long WeightBytes => _graph.Initializer.Sum(t => (long)t.RawData.Length);

    /// <summary>Writes the model (opset <paramref name="opset"/>) to <paramref name="path"/> atomically. When the weights
    /// exceed <paramref name="externalThreshold"/> bytes they go to <c>&lt;path&gt;.data</c> beside it (ONNX external
    /// data: each initializer names the file, its offset and length), as protobuf cannot hold more than 2 GB.</summary>
    public void Save(string path, int opset, string docString, IEnumerable<(string Key, string Value)> metadata, long externalThreshold)
    {
        string dataPath = path + ".data";
        if (WeightBytes > externalThreshold)
        {
            AtomicFile.Write(dataPath, stream =>
            {
                long offset = 0;
                foreach (var t in _graph.Initializer.Where(t => t.RawData.Length > 0))
                {
                    t.RawData.WriteTo(stream);
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = Path.GetFileName(dataPath) });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = t.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    offset += t.RawData.Length;
                    t.ClearRawData();
                }
            });
        }
        else if (File.Exists(dataPath)) File.Delete(dataPath); // a stale sidecar of an earlier, larger export
        var model = new ModelProto
        {
            IrVersion = 8, ProducerName = "peft-engine", ProducerVersion = typeof(OnnxGraph).Assembly.GetName().Version?.ToString() ?? "",
            DocString = docString, Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        foreach (var (key, value) in metadata) model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        AtomicFile.Write(path, stream => model.WriteTo(stream));
    }
}
