using System.Buffers.Binary;
using System.Text;
using Engine.IO;

namespace Engine.Checkpoints;

/// <summary>
/// A reader for the subset of Python's pickle format that a saved PyTorch state dict uses (protocols 2–5), that
/// builds plain data and never executes anything: a global is only a name, and only names on an allow-list may be
/// called (by REDUCE/NEWOBJ), each mapped to a fixed data constructor. Any other global is an error naming it, where
/// torch.load would import and call it.
/// </summary>
static class Pickle
{
    /// <summary>A global referenced by the pickle (module and name); never resolved to code.</summary>
    public sealed record Global(string Module, string Name)
    {
        public override string ToString() => $"{Module}.{Name}";
    }

    /// <summary>A storage referenced by a persistent id ('storage', type, key, location, numel).</summary>
    public sealed record Storage(string DType, string Key, long Count);

    /// <summary>A tensor: a view of a storage with an offset and strides in elements.</summary>
    public sealed record Tensor(Storage Storage, long Offset, int[] Shape, long[] Stride);

    /// <summary>An object of an allowed class whose content is not needed (argparse.Namespace, a config node).</summary>
    public sealed record Opaque(string Class);

    /// <summary>Python's None (a distinct object, so it can sit in collections).</summary>
    public sealed class None
    {
        public static readonly None Value = new();
        None() { }
    }

    /// <summary>A pickled dict (insertion-ordered, string or other keys).</summary>
    public sealed class Dict
    {
        public readonly List<KeyValuePair<object, object>> Items = new();
        public void Set(object key, object value) => Items.Add(new(key, value));
        public object? Get(string key) => Items.FirstOrDefault(kv => kv.Key is string s && s == key).Value;
    }

    /// <summary>The storage classes torch writes and the safetensors dtype of their elements.</summary>
    static readonly Dictionary<string, string> StorageTypes = new()
    {
        ["FloatStorage"] = "F32", ["HalfStorage"] = "F16", ["BFloat16Storage"] = "BF16", ["DoubleStorage"] = "F64",
        ["LongStorage"] = "I64", ["IntStorage"] = "I32", ["ShortStorage"] = "I16", ["CharStorage"] = "I8",
        ["ByteStorage"] = "U8", ["BoolStorage"] = "BOOL",
    };

    /// <summary>Classes whose instances are kept as <see cref="Opaque"/> (the extras of training checkpoints).</summary>
    static readonly HashSet<string> OpaqueClasses = ["argparse.Namespace", "yacs.config.CfgNode", "builtins.set", "builtins.frozenset"];

    /// <summary>Callables a state dict needs, each mapped to a data constructor in <c>Call</c>.</summary>
    static readonly HashSet<string> AllowedGlobals = ["collections.OrderedDict", "builtins.dict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"];

    /// <summary>Parses <paramref name="data"/>; <paramref name="source"/> names it in errors.</summary>
    /// <exception cref="InvalidInputException">Malformed, truncated, an unsupported opcode, or a global outside the allow-list.</exception>
    public static object Load(ReadOnlySpan<byte> data, string source)
    {
        var stack = new List<object>();
        var marks = new Stack<int>();
        var memo = new Dictionary<long, object>();
        int at = 0;
        InvalidInputException Bad(string problem) => new(source, $"pickle byte {at}: {problem}");
        ReadOnlySpan<byte> Take(ReadOnlySpan<byte> all, int n)
        {
            if (n < 0 || at + (long)n > all.Length) throw Bad("truncated (the data ends inside an opcode)");
            var s = all.Slice(at, n);
            at += n;
            return s;
        }
        object Pop()
        {
            if (stack.Count == 0 || marks.Count > 0 && stack.Count == marks.Peek()) throw Bad("stack underflow");
            var v = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            return v;
        }
        List<object> PopMark()
        {
            if (marks.Count == 0) throw Bad("no MARK to pop to");
            int from = marks.Pop();
            var items = stack.GetRange(from, stack.Count - from);
            stack.RemoveRange(from, stack.Count - from);
            return items;
        }
        string Line(ReadOnlySpan<byte> all)
        {
            int end = all[at..].IndexOf((byte)'\n');
            if (end < 0) throw Bad("truncated (a text line has no end)");
            var s = Encoding.UTF8.GetString(all.Slice(at, end));
            at += end + 1;
            return s;
        }
        while (true)
        {
            if (at >= data.Length) throw Bad("truncated (no STOP opcode)");
            int opAt = at;
            byte op = data[at++];
            switch (op)
            {
                case 0x80: Take(data, 1); break; // PROTO
                case 0x95: Take(data, 8); break; // FRAME: only a length hint
                case (byte)'.': // STOP
                    if (stack.Count != 1) throw Bad($"STOP with {stack.Count} values on the stack");
                    return stack[0];
                case (byte)'(': marks.Push(stack.Count); break;
                case (byte)'}': stack.Add(new Dict()); break;
                case (byte)']': stack.Add(new List<object>()); break;
                case (byte)')': stack.Add(Array.Empty<object>()); break;
                case (byte)'t': stack.Add(PopMark().ToArray()); break;
                case 0x85: stack.Add(new[] { Pop() }); break;
                case 0x86: { var b = Pop(); var a = Pop(); stack.Add(new[] { a, b }); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); stack.Add(new[] { a, b, c }); break; }
                case (byte)'N': stack.Add(None.Value); break;
                case 0x88: stack.Add(true); break;
                case 0x89: stack.Add(false); break;
                case (byte)'K': stack.Add((long)Take(data, 1)[0]); break;
                case (byte)'M': stack.Add((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(data, 2))); break;
                case (byte)'J': stack.Add((long)BinaryPrimitives.ReadInt32LittleEndian(Take(data, 4))); break;
                case 0x8a: // LONG1: n bytes of little-endian two's complement
                {
                    int n = Take(data, 1)[0];
                    if (n > 8) throw Bad($"an integer of {n} bytes is too large");
                    var bytes = Take(data, n);
                    long v = 0;
                    for (int i = n - 1; i >= 0; i--) v = v << 8 | bytes[i];
                    if (n is > 0 and < 8 && (bytes[n - 1] & 0x80) != 0) v -= 1L << (8 * n);
                    stack.Add(v);
                    break;
                }
                case (byte)'G': stack.Add(BinaryPrimitives.ReadDoubleBigEndian(Take(data, 8))); break;
                case (byte)'X': stack.Add(Encoding.UTF8.GetString(Take(data, Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)))))); break;
                case 0x8c: stack.Add(Encoding.UTF8.GetString(Take(data, Take(data, 1)[0]))); break;
                case (byte)'T': stack.Add(Encoding.Latin1.GetString(Take(data, Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)))))); break;
                case (byte)'U': stack.Add(Encoding.Latin1.GetString(Take(data, Take(data, 1)[0]))); break;
                case (byte)'B': stack.Add(Take(data, Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)))).ToArray()); break;
                case (byte)'C': stack.Add(Take(data, Take(data, 1)[0]).ToArray()); break;
                case (byte)'q': memo[Take(data, 1)[0]] = Peek(); break;
                case (byte)'r': memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4))] = Peek(); break;
                case 0x94: memo[memo.Count] = Peek(); break;
                case (byte)'h': stack.Add(Memo(Take(data, 1)[0])); break;
                case (byte)'j': stack.Add(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)))); break;
                case (byte)'c': { string module = Line(data), name = Line(data); stack.Add(Allowed(new Global(module, name))); break; }
                case 0x93: { var name = Pop() as string; var module = Pop() as string; stack.Add(Allowed(new Global(module ?? throw Bad("STACK_GLOBAL without a module name"), name ?? throw Bad("STACK_GLOBAL without a name")))); break; }
                case (byte)'Q': stack.Add(PersistentLoad(Pop())); break;
                case (byte)'R': { var args = Pop(); stack.Add(Call(Pop(), args as object[] ?? throw Bad("REDUCE arguments are not a tuple"))); break; }
                case 0x81: { var args = Pop(); stack.Add(Call(Pop(), args as object[] ?? throw Bad("NEWOBJ arguments are not a tuple"))); break; }
                case (byte)'b': { Pop(); if (Peek() is not (Dict or Opaque)) throw Bad("BUILD on a value that takes no state"); break; } // state (_metadata, attributes) is not needed
                case (byte)'s': { var v = Pop(); var k = Pop(); AsDict(Peek()).Set(k, v); break; }
                case (byte)'u':
                {
                    var items = PopMark();
                    if (items.Count % 2 != 0) throw Bad("SETITEMS with an odd number of values");
                    var dict = AsDict(Peek());
                    for (int i = 0; i < items.Count; i += 2) dict.Set(items[i], items[i + 1]);
                    break;
                }
                case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; }
                case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                default:
                    at = opAt;
                    throw Bad($"unsupported opcode 0x{op:x2} ('{(op is >= 32 and < 127 ? (char)op : '?')}'); not a PyTorch state dict");
            }
        }

        Global Allowed(Global g) => AllowedGlobals.Contains(g.ToString()) || g.Module == "torch" && StorageTypes.ContainsKey(g.Name) || OpaqueClasses.Contains(g.ToString())
            ? g : throw Bad($"refused global '{g}' (not on the allow-list of a state dict; this reader never runs code)");
        object Peek() => stack.Count > 0 ? stack[^1] : throw Bad("stack underflow");
        object Memo(long key) => memo.TryGetValue(key, out var v) ? v : throw Bad($"memo entry {key} was never stored");
        int Length(uint n) => n <= int.MaxValue ? (int)n : throw Bad($"a length of {n} bytes");
        Dict AsDict(object o) => o as Dict ?? throw Bad($"SETITEM(S) on a {o.GetType().Name}, not a dict");
        List<object> AsList(object o) => o as List<object> ?? throw Bad($"APPEND(S) on a {o.GetType().Name}, not a list");

        object PersistentLoad(object pid)
        {
            if (pid is not object[] { Length: 5 } t || t[0] is not "storage" || t[1] is not Global type || t[2] is not string key || t[4] is not long count)
                throw Bad("a persistent id that is not ('storage', type, key, location, numel)");
            if (type.Module != "torch" || !StorageTypes.TryGetValue(type.Name, out var dtype))
                throw Bad($"unknown storage type '{type}'");
            if (count < 0) throw Bad($"storage '{key}' has a negative size {count}");
            return new Storage(dtype, key, count);
        }

        object Call(object callable, object[] args)
        {
            if (callable is not Global g) throw Bad("REDUCE/NEWOBJ on a value that is not a global");
            string name = g.ToString();
            switch (name)
            {
                case "collections.OrderedDict" or "builtins.dict" when args.Length == 0:
                    return new Dict();
                case "torch._utils._rebuild_tensor_v2" when args.Length >= 4:
                    if (args[0] is not Storage storage || args[1] is not long offset || Ints(args[2]) is not long[] size || Ints(args[3]) is not long[] stride || size.Length != stride.Length)
                        throw Bad("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
                    if (offset < 0 || size.Any(d => d < 0 || d > int.MaxValue) || stride.Any(s => s < 0))
                        throw Bad($"a tensor view with a negative or huge offset, size or stride ({offset}, [{string.Join(", ", size)}], [{string.Join(", ", stride)}])");
                    return new Tensor(storage, offset, [.. size.Select(d => (int)d)], stride);
                case "torch._utils._rebuild_parameter" when args.Length >= 1:
                    return args[0] is Tensor t ? t : throw Bad("_rebuild_parameter of something that is not a tensor");
                default:
                    if (OpaqueClasses.Contains(name)) return new Opaque(name);
                    throw Bad($"refused global '{name}' (not on the allow-list of a state dict; this reader never runs code)");
            }
        }
    }

    static long[]? Ints(object o) => o is object[] items && items.All(i => i is long) ? [.. items.Cast<long>()] : null;
}
