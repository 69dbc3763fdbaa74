using System.Globalization;
using System.Text.RegularExpressions;
using Engine.Kernels;

namespace Engine.Imaging;

/// <summary>timm's RandAugment operations (<c>auto_augment.py</c> names; the <c>Increasing</c> variants grow stronger
/// with the magnitude).</summary>
public enum RandAugmentOp
{
    /// <summary>ImageOps.autocontrast.</summary>
    AutoContrast,
    /// <summary>ImageOps.equalize.</summary>
    Equalize,
    /// <summary>ImageOps.invert.</summary>
    Invert,
    /// <summary>Rotation by ±30·m/10 degrees.</summary>
    Rotate,
    /// <summary>Keeps int(4·m/10) bits.</summary>
    Posterize,
    /// <summary>Keeps 4 − int(4·m/10) bits.</summary>
    PosterizeIncreasing,
    /// <summary>Inverts values from int(256·m/10) up.</summary>
    Solarize,
    /// <summary>Inverts values from 256 − int(256·m/10) up.</summary>
    SolarizeIncreasing,
    /// <summary>Adds int(110·m/10) to values below 128.</summary>
    SolarizeAdd,
    /// <summary>Saturation factor 0.1 + 1.8·m/10.</summary>
    Color,
    /// <summary>Saturation factor 1 ± 0.9·m/10.</summary>
    ColorIncreasing,
    /// <summary>Contrast factor 0.1 + 1.8·m/10.</summary>
    Contrast,
    /// <summary>Contrast factor 1 ± 0.9·m/10.</summary>
    ContrastIncreasing,
    /// <summary>Brightness factor 0.1 + 1.8·m/10.</summary>
    Brightness,
    /// <summary>Brightness factor 1 ± 0.9·m/10.</summary>
    BrightnessIncreasing,
    /// <summary>Sharpness factor 0.1 + 1.8·m/10.</summary>
    Sharpness,
    /// <summary>Sharpness factor 1 ± 0.9·m/10.</summary>
    SharpnessIncreasing,
    /// <summary>Horizontal shear ±0.3·m/10.</summary>
    ShearX,
    /// <summary>Vertical shear ±0.3·m/10.</summary>
    ShearY,
    /// <summary>Horizontal shift by ±0.45·m/10 of the width.</summary>
    TranslateXRel,
    /// <summary>Vertical shift by ±0.45·m/10 of the height.</summary>
    TranslateYRel,
}

/// <summary>One operation RandAugment chose for an image: the op, its magnitude after the Gaussian draw and the clip,
/// and the argument timm's level function makes of it (degrees, bits, threshold, addend, factor, shear or fraction,
/// sign included; 0 for the ops that take none).</summary>
public readonly record struct RandAugmentDraw(RandAugmentOp Op, double Magnitude, double Argument);

/// <summary>
/// timm's RandAugment (<c>rand_augment_transform</c>) on 8-bit RGB images, byte-exact per operation against Pillow
/// (<see cref="PillowOps"/>). A policy such as <c>rand-m9-mstd0.5-inc1</c> (SCT's VTAB-1k configs) means: per image,
/// <see cref="Layers"/> (2) ops drawn uniformly with replacement from the 15 of the set (<c>inc1</c>: the increasing
/// variants), each applied with probability 0.5 at a magnitude drawn from N(<see cref="Magnitude"/>,
/// <see cref="MagnitudeStd"/>²) clipped to [0, <see cref="MagnitudeMax"/>]; rotations, shears, shifts and the
/// increasing enhancements take a random sign. Resampling is bicubic and uncovered pixels take <see cref="Fill"/> (timm:
/// the normalisation mean × 255, rounded), as timm's <c>create_transform(..., interpolation='bicubic')</c> sets them.
/// The draws come from a counter RNG keyed by a per-image seed: the same distributions as timm, not Python's stream.
/// </summary>
public sealed class RandAugment
{
    static readonly RandAugmentOp[] Standard =
    [
        RandAugmentOp.AutoContrast, RandAugmentOp.Equalize, RandAugmentOp.Invert, RandAugmentOp.Rotate, RandAugmentOp.Posterize,
        RandAugmentOp.Solarize, RandAugmentOp.SolarizeAdd, RandAugmentOp.Color, RandAugmentOp.Contrast, RandAugmentOp.Brightness,
        RandAugmentOp.Sharpness, RandAugmentOp.ShearX, RandAugmentOp.ShearY, RandAugmentOp.TranslateXRel, RandAugmentOp.TranslateYRel,
    ];

    static readonly RandAugmentOp[] Increasing =
    [
        RandAugmentOp.AutoContrast, RandAugmentOp.Equalize, RandAugmentOp.Invert, RandAugmentOp.Rotate, RandAugmentOp.PosterizeIncreasing,
        RandAugmentOp.SolarizeIncreasing, RandAugmentOp.SolarizeAdd, RandAugmentOp.ColorIncreasing, RandAugmentOp.ContrastIncreasing,
        RandAugmentOp.BrightnessIncreasing, RandAugmentOp.SharpnessIncreasing, RandAugmentOp.ShearX, RandAugmentOp.ShearY,
        RandAugmentOp.TranslateXRel, RandAugmentOp.TranslateYRel,
    ];

    // Counters per layer: choice, apply, two for the Gaussian, sign.
    const ulong DrawsPerLayer = 8;

    RandAugment(string policy, byte[] fill) => (Policy, _fill) = (policy, fill);

    readonly byte[] _fill;

    /// <summary>The policy string it was parsed from.</summary>
    public string Policy { get; }
    /// <summary>Ops per image (<c>n</c>, default 2).</summary>
    public int Layers { get; private set; } = 2;
    /// <summary>Mean magnitude (<c>m</c>, default 10).</summary>
    public double Magnitude { get; private set; } = 10;
    /// <summary>Standard deviation of the magnitude per op draw (<c>mstd</c>; 0 fixed; above 100: uniform in [0, m]).</summary>
    public double MagnitudeStd { get; private set; }
    /// <summary>Upper clip of the drawn magnitude (<c>mmax</c>, default 10).</summary>
    public double MagnitudeMax { get; private set; } = 10;
    /// <summary>Probability that a chosen op is applied (<c>p</c>, default 0.5).</summary>
    public double Probability { get; private set; } = 0.5;
    /// <summary>The ops drawn from, in timm's order.</summary>
    public IReadOnlyList<RandAugmentOp> Ops { get; private set; } = Standard;
    /// <summary>The fill colour of rotations, shears and shifts.</summary>
    public ReadOnlySpan<byte> Fill => _fill;

    /// <summary>
    /// Parses a timm policy: <c>rand</c> followed by <c>-m</c>magnitude, <c>-n</c>ops, <c>-mstd</c>std,
    /// <c>-mmax</c>clip, <c>-p</c>probability, <c>-inc</c>0|1, in any order (e.g. <c>rand-m9-mstd0.5-inc1</c>).
    /// </summary>
    /// <param name="policy">The policy string.</param>
    /// <param name="normalization">Its mean gives the fill colour, as timm's <c>img_mean</c>.</param>
    /// <exception cref="ArgumentException">Not a RandAugment policy, or a key this implementation does not have (timm's
    /// <c>w</c> op weights); the message names it.</exception>
    public static RandAugment Parse(string policy, Normalization normalization)
    {
        ArgumentNullException.ThrowIfNull(policy);
        var parts = policy.Split('-');
        if (parts[0] != "rand") throw Bad(policy, "a RandAugment policy starts with 'rand'");
        var fill = normalization.Mean.Select(m => (byte)Math.Clamp(Math.Round(255.0 * m, MidpointRounding.ToEven), 0, 255)).ToArray();
        var result = new RandAugment(policy, fill);
        foreach (var part in parts.Skip(1))
        {
            var match = Regex.Match(part, @"^([a-z]+)(\d.*)$");
            if (!match.Success) throw Bad(policy, $"'{part}' is not a key followed by a number");
            string key = match.Groups[1].Value, text = match.Groups[2].Value;
            if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value) || value < 0)
                throw Bad(policy, $"'{part}': '{text}' is not a finite non-negative number");
            switch (key)
            {
                case "m": result.Magnitude = value; break;
                case "n" when value == Math.Floor(value) && value <= 16: result.Layers = (int)value; break;
                case "n": throw Bad(policy, $"'{part}': the op count is an integer up to 16");
                case "mstd": result.MagnitudeStd = value; break;
                case "mmax": result.MagnitudeMax = value; break;
                case "p" when value <= 1: result.Probability = value; break;
                case "p": throw Bad(policy, $"'{part}': a probability is at most 1");
                case "inc": result.Ops = value != 0 ? Increasing : Standard; break;
                default: throw Bad(policy, $"unknown key '{key}' (known: m, n, mstd, mmax, p, inc)");
            }
        }
        return result;
    }

    static ArgumentException Bad(string policy, string why) => new($"RandAugment policy '{policy}': {why}", nameof(policy));

    /// <summary>The ops applied to the image of <paramref name="seed"/>, in order (skipped ones left out).</summary>
    public List<RandAugmentDraw> Draw(ulong seed)
    {
        var draws = new List<RandAugmentDraw>(Layers);
        for (int layer = 0; layer < Layers; layer++)
        {
            ulong at = (ulong)layer * DrawsPerLayer;
            double Uniform(ulong k) => CounterRng.Uniform(seed, at + k);
            var op = Ops[Math.Min(Ops.Count - 1, (int)(Uniform(0) * Ops.Count))];
            if (Uniform(1) >= Probability) continue;
            double magnitude = Magnitude;
            if (MagnitudeStd > 100) magnitude = Uniform(2) * Magnitude;
            else if (MagnitudeStd > 0) // Box–Muller
                magnitude += MagnitudeStd * Math.Sqrt(-2 * Math.Log(1 - Uniform(2))) * Math.Cos(2 * Math.PI * Uniform(3));
            magnitude = Math.Clamp(magnitude, 0, MagnitudeMax);
            double sign = Uniform(4) < 0.5 ? -1 : 1;
            draws.Add(new RandAugmentDraw(op, magnitude, Argument(op, magnitude, sign)));
        }
        return draws;
    }

    /// <summary>timm's level function of <paramref name="op"/>: its argument at <paramref name="magnitude"/>, with
    /// <paramref name="sign"/> (±1) where timm negates at random.</summary>
    public static double Argument(RandAugmentOp op, double magnitude, double sign)
    {
        double level = magnitude / 10;
        return op switch
        {
            RandAugmentOp.Rotate => sign * level * 30,
            RandAugmentOp.Posterize => (int)(level * 4),
            RandAugmentOp.PosterizeIncreasing => 4 - (int)(level * 4),
            RandAugmentOp.Solarize => (int)(level * 256),
            RandAugmentOp.SolarizeIncreasing => 256 - (int)(level * 256),
            RandAugmentOp.SolarizeAdd => (int)(level * 110),
            RandAugmentOp.Color or RandAugmentOp.Contrast or RandAugmentOp.Brightness or RandAugmentOp.Sharpness => level * 1.8 + 0.1,
            RandAugmentOp.ColorIncreasing or RandAugmentOp.ContrastIncreasing or RandAugmentOp.BrightnessIncreasing or RandAugmentOp.SharpnessIncreasing
                => 1.0 + sign * level * 0.9,
            RandAugmentOp.ShearX or RandAugmentOp.ShearY => sign * level * 0.3,
            RandAugmentOp.TranslateXRel or RandAugmentOp.TranslateYRel => sign * level * 0.45,
            _ => 0,
        };
    }

    /// <summary>Applies the ops of <paramref name="seed"/> to <paramref name="rgb"/> [height, width, 3] in place.</summary>
    public void Apply(Span<byte> rgb, int height, int width, ulong seed)
    {
        foreach (var draw in Draw(seed)) Apply(draw, rgb, height, width, _fill);
    }

    /// <summary>Applies one drawn op as timm's op function calls Pillow.</summary>
    public static void Apply(RandAugmentDraw draw, Span<byte> rgb, int height, int width, ReadOnlySpan<byte> fill)
    {
        double arg = draw.Argument;
        switch (draw.Op)
        {
            case RandAugmentOp.AutoContrast: PillowOps.AutoContrast(rgb); break;
            case RandAugmentOp.Equalize: PillowOps.Equalize(rgb); break;
            case RandAugmentOp.Invert: PillowOps.Invert(rgb); break;
            case RandAugmentOp.Rotate: PillowOps.Rotate(rgb, height, width, arg, fill); break;
            case RandAugmentOp.Posterize or RandAugmentOp.PosterizeIncreasing: PillowOps.Posterize(rgb, (int)arg); break;
            case RandAugmentOp.Solarize or RandAugmentOp.SolarizeIncreasing: PillowOps.Solarize(rgb, (int)arg); break;
            case RandAugmentOp.SolarizeAdd: PillowOps.SolarizeAdd(rgb, (int)arg); break;
            case RandAugmentOp.Color or RandAugmentOp.ColorIncreasing: PillowOps.Color(rgb, (float)arg); break;
            case RandAugmentOp.Contrast or RandAugmentOp.ContrastIncreasing: PillowOps.Contrast(rgb, (float)arg); break;
            case RandAugmentOp.Brightness or RandAugmentOp.BrightnessIncreasing: PillowOps.Brightness(rgb, (float)arg); break;
            case RandAugmentOp.Sharpness or RandAugmentOp.SharpnessIncreasing: PillowOps.Sharpness(rgb, height, width, (float)arg); break;
            case RandAugmentOp.ShearX: PillowOps.Affine(rgb, height, width, [1, arg, 0, 0, 1, 0], fill); break;
            case RandAugmentOp.ShearY: PillowOps.Affine(rgb, height, width, [1, 0, 0, arg, 1, 0], fill); break;
            case RandAugmentOp.TranslateXRel: PillowOps.Affine(rgb, height, width, [1, 0, arg * width, 0, 1, 0], fill); break;
            case RandAugmentOp.TranslateYRel: PillowOps.Affine(rgb, height, width, [1, 0, 0, 0, 1, arg * height], fill); break;
            default: throw new ArgumentOutOfRangeException(nameof(draw), draw.Op, "not a RandAugment op");
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Policy;
}
