using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Engine.Checkpoints;

/// <summary>The element types a checkpoint may store (safetensors names), their sizes, and conversion of raw
/// little-endian bytes to float32.</summary>
static class DiskDTypes
{
    /// <summary>Bytes per element, or 0 for a dtype we cannot read.</summary>
    public static int SizeOf(string dtype) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => 0,
    };

    /// <summary>Converts <c>destination.Length</c> elements of <paramref name="dtype"/> at <paramref name="source"/>.</summary>
    public static unsafe void ToFloat(string dtype, byte* source, Span<float> destination)
    {
        int n = destination.Length;
        switch (dtype)
        {
            case "F32": new ReadOnlySpan<float>(source, n).CopyTo(destination); break;
            case "F16": TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(source, n), destination); break;
            case "BF16":
                var bits = MemoryMarshal.Cast<float, uint>(destination);
                var half = new ReadOnlySpan<ushort>(source, n);
                for (int i = 0; i < n; i++) bits[i] = (uint)half[i] << 16; // bfloat16 is the top half of a float32
                break;
            case "F64": for (int i = 0; i < n; i++) destination[i] = (float)((double*)source)[i]; break;
            case "I64": for (int i = 0; i < n; i++) destination[i] = ((long*)source)[i]; break;
            case "I32": for (int i = 0; i < n; i++) destination[i] = ((int*)source)[i]; break;
            case "I16": for (int i = 0; i < n; i++) destination[i] = ((short*)source)[i]; break;
            case "I8": for (int i = 0; i < n; i++) destination[i] = ((sbyte*)source)[i]; break;
            case "U8" or "BOOL": for (int i = 0; i < n; i++) destination[i] = source[i]; break;
            default: throw new NotSupportedException($"dtype {dtype}");
        }
    }
}
