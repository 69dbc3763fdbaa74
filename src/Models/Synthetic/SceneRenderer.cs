using Engine.Imaging;
using Engine.Kernels;

namespace Engine.Models.Synthetic;

/// <summary>The shapes the renderer draws (sizes are in units of the object's radius).</summary>
public enum Shape
{
    /// <summary>A disc of radius 1.</summary>
    Circle,
    /// <summary>A square of half-side 0.8.</summary>
    Square,
    /// <summary>An equilateral triangle.</summary>
    Triangle,
    /// <summary>A bar 2 long and 0.44 wide (its angle is an orientation modulo 180°).</summary>
    Bar,
    /// <summary>Two crossed bars.</summary>
    Cross,
    /// <summary>An annulus between radii 0.6 and 1.</summary>
    Ring,
}

/// <summary>An object in a scene: shape, centre (pixels), radius (pixels), rotation (radians) and RGB colour.</summary>
public readonly record struct SceneObject(Shape Shape, double X, double Y, double Radius, double Angle, (byte R, byte G, byte B) Color);

/// <summary>
/// A small procedural renderer for the synthetic tasks: backgrounds (flat, gradient, noise, clutter, tissue-like) and
/// filled shapes drawn with 3×3 supersampling. Every random choice comes from a counter RNG keyed by the caller's seed,
/// so an image is a pure function of (task, index).
/// </summary>
public sealed class SceneRenderer
{
    readonly double[] _rgb;
    readonly ulong _seed;
    ulong _draw;

    /// <summary>A canvas of <paramref name="size"/>×<paramref name="size"/> pixels whose draws come from <paramref name="seed"/>.</summary>
    public SceneRenderer(int size, ulong seed)
    {
        Size = size;
        _rgb = new double[size * size * 3];
        _seed = seed;
    }

    /// <summary>Side of the square canvas.</summary>
    public int Size { get; }

    /// <summary>The six object colours (red, green, blue, yellow, magenta, cyan).</summary>
    public static readonly (byte R, byte G, byte B)[] Palette = [(220, 40, 40), (40, 190, 60), (50, 80, 230), (235, 210, 40), (200, 60, 200), (40, 200, 210)];

    /// <summary>A uniform draw in [low, high).</summary>
    public double Uniform(double low, double high) => low + (high - low) * CounterRng.Uniform(_seed, _draw++);

    /// <summary>A uniform integer in [0, n).</summary>
    public int Below(int n) => Math.Min(n - 1, (int)(CounterRng.Uniform(_seed, _draw++) * n));

    /// <summary>A random background: flat, a linear gradient, or noise, in muted colours.</summary>
    public void RandomBackground(double noise = 12)
    {
        double r = Uniform(40, 160), g = Uniform(40, 160), b = Uniform(40, 160);
        int kind = Below(3);
        double dr = Uniform(-60, 60), dg = Uniform(-60, 60), db = Uniform(-60, 60), angle = Uniform(0, Math.PI);
        for (int y = 0; y < Size; y++)
            for (int x = 0; x < Size; x++)
            {
                double t = kind == 1 ? ((x - Size / 2.0) * Math.Cos(angle) + (y - Size / 2.0) * Math.Sin(angle)) / Size : 0;
                int i = (y * Size + x) * 3;
                _rgb[i] = r + t * dr;
                _rgb[i + 1] = g + t * dg;
                _rgb[i + 2] = b + t * db;
            }
        AddNoise(kind == 2 ? noise * 2.5 : noise);
    }

    /// <summary>Adds Gaussian-like pixel noise of standard deviation about <paramref name="std"/>.</summary>
    public void AddNoise(double std)
    {
        for (int i = 0; i < _rgb.Length; i++) _rgb[i] += std * (Uniform(-1, 1) + Uniform(-1, 1) + Uniform(-1, 1));
    }

    /// <summary>Clutter: thin random lines and small dots in random colours.</summary>
    public void Clutter(int lines, int dots)
    {
        for (int l = 0; l < lines; l++)
        {
            double x0 = Uniform(0, Size), y0 = Uniform(0, Size), angle = Uniform(0, Math.PI), length = Uniform(Size / 4.0, Size);
            var c = (Uniform(30, 230), Uniform(30, 230), Uniform(30, 230));
            for (double s = 0; s < length; s += 0.5) Plot(x0 + s * Math.Cos(angle), y0 + s * Math.Sin(angle), c);
        }
        for (int d = 0; d < dots; d++)
        {
            double x = Uniform(0, Size), y = Uniform(0, Size);
            var c = (Uniform(30, 230), Uniform(30, 230), Uniform(30, 230));
            for (int k = 0; k < 4; k++) Plot(x + k % 2, y + k / 2, c);
        }
    }

    void Plot(double x, double y, (double R, double G, double B) c)
    {
        int px = (int)x, py = (int)y;
        if ((uint)px >= (uint)Size || (uint)py >= (uint)Size) return;
        int i = (py * Size + px) * 3;
        (_rgb[i], _rgb[i + 1], _rgb[i + 2]) = c;
    }

    /// <summary>Sets every pixel from a function of (x, y) in [0, 1)² returning RGB.</summary>
    public void Paint(Func<double, double, (double R, double G, double B)> color)
    {
        for (int y = 0; y < Size; y++)
            for (int x = 0; x < Size; x++)
            {
                int i = (y * Size + x) * 3;
                (_rgb[i], _rgb[i + 1], _rgb[i + 2]) = color((x + 0.5) / Size, (y + 0.5) / Size);
            }
    }

    /// <summary>True when the point (u, v), in the object's frame and units of its radius, lies inside the shape.</summary>
    static bool Inside(Shape shape, double u, double v) => shape switch
    {
        Shape.Circle => u * u + v * v < 1,
        Shape.Square => Math.Abs(u) < 0.8 && Math.Abs(v) < 0.8,
        Shape.Triangle => v < 0.5 && Math.Sqrt(3) * u - v < 1 && -Math.Sqrt(3) * u - v < 1,
        Shape.Bar => Math.Abs(u) < 1 && Math.Abs(v) < 0.22,
        Shape.Cross => Math.Abs(u) < 1 && Math.Abs(v) < 0.25 || Math.Abs(v) < 1 && Math.Abs(u) < 0.25,
        _ => u * u + v * v < 1 && u * u + v * v > 0.36,
    };

    /// <summary>Draws a filled object (3×3 supersampled coverage blended over the canvas).</summary>
    public void Draw(SceneObject o)
    {
        double cos = Math.Cos(o.Angle), sin = Math.Sin(o.Angle), reach = o.Radius * 1.5;
        int x0 = Math.Max(0, (int)(o.X - reach)), x1 = Math.Min(Size - 1, (int)(o.X + reach) + 1);
        int y0 = Math.Max(0, (int)(o.Y - reach)), y1 = Math.Min(Size - 1, (int)(o.Y + reach) + 1);
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
            {
                int covered = 0;
                for (int sy = 0; sy < 3; sy++)
                    for (int sx = 0; sx < 3; sx++)
                    {
                        double dx = x + (sx + 0.5) / 3 - o.X, dy = y + (sy + 0.5) / 3 - o.Y;
                        if (Inside(o.Shape, (dx * cos + dy * sin) / o.Radius, (-dx * sin + dy * cos) / o.Radius)) covered++;
                    }
                if (covered == 0) continue;
                double a = covered / 9.0;
                int i = (y * Size + x) * 3;
                _rgb[i] += a * (o.Color.R - _rgb[i]);
                _rgb[i + 1] += a * (o.Color.G - _rgb[i + 1]);
                _rgb[i + 2] += a * (o.Color.B - _rgb[i + 2]);
            }
    }

    /// <summary>A random object colour from the palette, with its brightness jittered.</summary>
    public (byte, byte, byte) RandomColor(int? index = null)
    {
        var (r, g, b) = Palette[index ?? Below(Palette.Length)];
        double k = Uniform(0.8, 1.1);
        return ((byte)Math.Clamp(r * k, 0, 255), (byte)Math.Clamp(g * k, 0, 255), (byte)Math.Clamp(b * k, 0, 255));
    }

    /// <summary>The canvas as an 8-bit image (clipped, rounded).</summary>
    public RgbImage ToImage()
    {
        var bytes = new byte[_rgb.Length];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = (byte)Math.Clamp(Math.Round(_rgb[i]), 0, 255);
        return new RgbImage(Size, Size, bytes);
    }
}
