using System.Reflection;
using System.Runtime.InteropServices;

namespace Engine.Imaging;

/// <summary>
/// Bindings to the TurboJPEG API of libjpeg-turbo (Debian's <c>libturbojpeg0</c>, soname libturbojpeg.so.0), the
/// same decoder Pillow uses, so decoded pixels match Pillow's bit for bit when the library versions match.
/// </summary>
static unsafe partial class TurboJpeg
{
    const string Lib = "turbojpeg";
    const string Soname = "libturbojpeg.so.0";

    /// <summary>Output pixel format: interleaved R, G, B.</summary>
    public const int PixelFormatRgb = 0;
    /// <summary>Treat libjpeg warnings (such as a premature end of data) as errors.</summary>
    public const int FlagStopOnWarning = 8192;
    /// <summary>The JPEG colorspace codes of tjDecompressHeader3.</summary>
    public const int ColorspaceCmyk = 3, ColorspaceYcck = 4;

    /// <summary>Chroma subsampling 4:2:0 (Pillow's default for JPEG).</summary>
    public const int Subsampling420 = 2;

    [LibraryImport(Lib)] public static partial IntPtr tjInitDecompress();
    [LibraryImport(Lib)] public static partial IntPtr tjInitCompress();
    [LibraryImport(Lib)] public static partial int tjCompress2(Handle handle, byte* src, int width, int pitch, int height, int pixelFormat,
        ref byte* jpeg, ref nuint size, int subsampling, int quality, int flags);
    [LibraryImport(Lib)] public static partial void tjFree(byte* buffer);
    [LibraryImport(Lib)] public static partial int tjDestroy(IntPtr handle);
    [LibraryImport(Lib)] public static partial int tjDecompressHeader3(Handle handle, byte* jpeg, nuint size, out int width, out int height, out int subsampling, out int colorspace);
    [LibraryImport(Lib)] public static partial int tjDecompress2(Handle handle, byte* jpeg, nuint size, byte* dst, int width, int pitch, int height, int pixelFormat, int flags);
    [LibraryImport(Lib)] public static partial IntPtr tjGetErrorStr2(Handle handle);

    static readonly Lazy<(bool Loaded, string Reason)> Library = new(() =>
    {
        NativeLibrary.SetDllImportResolver(typeof(TurboJpeg).Assembly, Resolve);
        return NativeLibrary.TryLoad(Soname, out _)
            ? (true, "")
            : (false, $"{Soname} could not be loaded; install libjpeg-turbo's TurboJPEG library (Debian: apt-get install libturbojpeg0)");
    });

    /// <summary>Loads the library once; false with the reason when it is missing.</summary>
    public static bool TryLoad(out string reason)
    {
        (bool loaded, reason) = Library.Value;
        return loaded;
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Lib && NativeLibrary.TryLoad(Soname, out var handle) ? handle : IntPtr.Zero;

    /// <summary>A TurboJPEG compressor or decompressor instance (not thread-safe: one per call).</summary>
    public sealed class Handle : SafeHandle
    {
        public Handle() : base(IntPtr.Zero, ownsHandle: true) { }

        public override bool IsInvalid => handle == IntPtr.Zero;

        /// <summary>The library's message for the last error on this instance.</summary>
        public string LastError => Marshal.PtrToStringUTF8(tjGetErrorStr2(this)) ?? "unknown error";

        public static Handle Create(bool compress)
        {
            var h = new Handle();
            h.SetHandle(compress ? tjInitCompress() : tjInitDecompress());
            if (h.IsInvalid) throw new InvalidOperationException("TurboJPEG could not create an instance (out of memory?)");
            return h;
        }

        protected override bool ReleaseHandle() => tjDestroy(handle) == 0;
    }
}
