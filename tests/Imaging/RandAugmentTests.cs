using System.Text.Json;
using Engine.Imaging;
using Engine.Kernels;
using Engine.Models.Peft;

namespace Engine.Tests;

/// <summary>timm's RandAugment: every op against Pillow's bytes for the same call (tests/Fixtures/make-randaugment.py),
/// the level functions against timm's formulas, the random choices against their distributions, and the policy parser.</summary>
[TestFixture]
public class RandAugmentTests
{
    static string Dir => VitFixtureTests.FixtureDir("randaugment");
    static readonly byte[] ImageNetFill = [124, 116, 104];

    public static IEnumerable<TestCaseData> PillowCases()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json")));
        foreach (var c in manifest.RootElement.GetProperty("cases").EnumerateArray())
        {
            string op = c.GetProperty("op").GetString()!, image = c.GetProperty("image").GetString()!, file = c.GetProperty("file").GetString()!;
            double arg = c.GetProperty("arg").GetDouble();
            yield return new TestCaseData(op, arg, image, file).SetName($"MatchesPillow({op}, {arg}, {image})");
        }
    }

    [TestCaseSource(nameof(PillowCases))]
    public void MatchesPillow(string op, double arg, string image, string file)
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json")));
        int h = manifest.RootElement.GetProperty("height").GetInt32(), w = manifest.RootElement.GetProperty("width").GetInt32();
        var rgb = File.ReadAllBytes(Path.Combine(Dir, image + ".rgb"));
        var expected = File.ReadAllBytes(Path.Combine(Dir, file));
        float factor = (float)arg;
        switch (op)
        {
            case "AutoContrast": PillowOps.AutoContrast(rgb); break;
            case "Equalize": PillowOps.Equalize(rgb); break;
            case "Invert": PillowOps.Invert(rgb); break;
            case "Posterize": PillowOps.Posterize(rgb, (int)arg); break;
            case "Solarize": PillowOps.Solarize(rgb, (int)arg); break;
            case "SolarizeAdd": PillowOps.SolarizeAdd(rgb, (int)arg); break;
            case "Color": PillowOps.Color(rgb, factor); break;
            case "Contrast": PillowOps.Contrast(rgb, factor); break;
            case "Brightness": PillowOps.Brightness(rgb, factor); break;
            case "Sharpness": PillowOps.Sharpness(rgb, h, w, factor); break;
            case "Rotate": PillowOps.Rotate(rgb, h, w, arg, ImageNetFill); break;
            // The remaining ops through RandAugment's own dispatch, as a draw with this argument.
            default: RandAugment.Apply(new RandAugmentDraw(Enum.Parse<RandAugmentOp>(op), 0, arg), rgb, h, w, ImageNetFill); break;
        }
        int wrong = rgb.Zip(expected).Count(p => p.First != p.Second);
        Assert.That(wrong, Is.Zero, $"{op}({arg}) on {image}: {wrong} of {rgb.Length} bytes differ from Pillow's");
    }

    [Test]
    public void TheFixturesChangeTheImage()
    {
        // Guards the fixtures themselves: every op except the identities changes the picture (a broken generator that
        // wrote the source back would make MatchesPillow pass for a no-op).
        var source = File.ReadAllBytes(Path.Combine(Dir, "source.rgb"));
        var identities = new[] { "Solarize.256.source.rgb", "SolarizeAdd.0.source.rgb", "Color.1.0.source.rgb", "Contrast.1.0.source.rgb",
            "Brightness.1.0.source.rgb", "Sharpness.1.0.source.rgb" };
        foreach (var file in Directory.GetFiles(Dir, "*.source.rgb").Select(Path.GetFileName))
            Assert.That(File.ReadAllBytes(Path.Combine(Dir, file!)).SequenceEqual(source), Is.EqualTo(identities.Contains(file)), file);
    }

    [Test]
    public void LevelFunctionsAreTimms()
    {
        // timm auto_augment.py at magnitude 9 (level 0.9), with the sign where timm negates at random.
        var expected = new (RandAugmentOp Op, double Sign, double Argument)[]
        {
            (RandAugmentOp.Rotate, -1, -27.0), (RandAugmentOp.PosterizeIncreasing, 1, 1), (RandAugmentOp.Posterize, 1, 3),
            (RandAugmentOp.SolarizeIncreasing, 1, 26), (RandAugmentOp.Solarize, 1, 230), (RandAugmentOp.SolarizeAdd, 1, 99),
            (RandAugmentOp.ColorIncreasing, 1, 1.81), (RandAugmentOp.ContrastIncreasing, -1, 0.19), (RandAugmentOp.Sharpness, -1, 1.72),
            (RandAugmentOp.ShearX, -1, -0.27), (RandAugmentOp.TranslateYRel, 1, 0.405), (RandAugmentOp.Equalize, -1, 0),
        };
        foreach (var (op, sign, argument) in expected)
            Assert.That(RandAugment.Argument(op, 9, sign), Is.EqualTo(argument).Within(1e-12), op.ToString());
        Assert.That(RandAugment.Argument(RandAugmentOp.PosterizeIncreasing, 10, 1), Is.Zero, "at the clip, 0 bits: black");
        Assert.That(RandAugment.Argument(RandAugmentOp.PosterizeIncreasing, 7.4, 1), Is.EqualTo(2));
    }

    [Test]
    public void ParsesTimmPolicies()
    {
        var sct = RandAugment.Parse(PeftRecipe.SctRandAugment, Normalization.ImageNet);
        Assert.That((sct.Layers, sct.Magnitude, sct.MagnitudeStd, sct.MagnitudeMax, sct.Probability), Is.EqualTo((2, 9.0, 0.5, 10.0, 0.5)));
        Assert.That(sct.Ops, Is.EqualTo(new[]
        {
            RandAugmentOp.AutoContrast, RandAugmentOp.Equalize, RandAugmentOp.Invert, RandAugmentOp.Rotate, RandAugmentOp.PosterizeIncreasing,
            RandAugmentOp.SolarizeIncreasing, RandAugmentOp.SolarizeAdd, RandAugmentOp.ColorIncreasing, RandAugmentOp.ContrastIncreasing,
            RandAugmentOp.BrightnessIncreasing, RandAugmentOp.SharpnessIncreasing, RandAugmentOp.ShearX, RandAugmentOp.ShearY,
            RandAugmentOp.TranslateXRel, RandAugmentOp.TranslateYRel,
        }), "timm's _RAND_INCREASING_TRANSFORMS");
        Assert.That(sct.Fill.ToArray(), Is.EqualTo(ImageNetFill), "timm's img_mean: round(255 · ImageNet mean)");
        Assert.That(RandAugment.Parse("rand-m9-mstd0.5", Normalization.Inception).Fill.ToArray(), Is.EqualTo(new byte[] { 128, 128, 128 }));
        var other = RandAugment.Parse("rand-n3-m7-p0.8-mmax12-inc0", Normalization.Inception);
        Assert.That((other.Layers, other.Magnitude, other.MagnitudeStd, other.MagnitudeMax, other.Probability), Is.EqualTo((3, 7.0, 0.0, 12.0, 0.8)));
        Assert.That(other.Ops, Does.Contain(RandAugmentOp.Posterize).And.Not.Contain(RandAugmentOp.PosterizeIncreasing));
        foreach (var (bad, says) in new[] { ("augmix-m5", "starts with 'rand'"), ("rand-w0", "unknown key 'w'"), ("rand-mX", "not a key followed by a number"),
                     ("rand-n2.5", "integer"), ("rand-p1.5", "at most 1"), ("rand-m1e999", "finite") })
            Assert.That(Assert.Throws<ArgumentException>(() => RandAugment.Parse(bad, Normalization.Inception))!.Message,
                Does.Contain($"'{bad}'").And.Contain(says), bad);
    }

    [Test]
    public void DrawsFollowTimmsDistributions()
    {
        // Per image: 2 ops uniform over 15 with replacement, each applied with p 0.5, magnitude N(9, 0.5²) clipped to
        // [0, 10], a fair sign. Bounds are 5 standard errors, so a wrong distribution fails and a right one passes.
        var ra = RandAugment.Parse(PeftRecipe.SctRandAugment, Normalization.ImageNet);
        const int images = 60_000;
        var perOp = new int[Enum.GetValues<RandAugmentOp>().Length];
        var appliedPerImage = new int[3];
        double sum = 0, sumSquares = 0;
        int draws = 0, clipped = 0, rotations = 0, negativeRotations = 0, repeats = 0;
        for (int i = 0; i < images; i++)
        {
            var list = ra.Draw(CounterRng.Hash(1234, (ulong)i));
            appliedPerImage[list.Count]++;
            if (list.Count == 2 && list[0].Op == list[1].Op) repeats++;
            foreach (var d in list)
            {
                perOp[(int)d.Op]++;
                draws++;
                sum += d.Magnitude;
                sumSquares += d.Magnitude * d.Magnitude;
                if (d.Magnitude == 10) clipped++;
                Assert.That(d.Magnitude, Is.InRange(0.0, 10.0));
                Assert.That(d.Argument, Is.EqualTo(RandAugment.Argument(d.Op, d.Magnitude, 1)).Or.EqualTo(RandAugment.Argument(d.Op, d.Magnitude, -1)));
                if (d.Op == RandAugmentOp.Rotate) { rotations++; negativeRotations += d.Argument < 0 ? 1 : 0; }
            }
        }
        static void Near(double observed, double expected, double n, double p, string what) =>
            Assert.That(observed, Is.EqualTo(expected).Within(5 * Math.Sqrt(n * p * (1 - p))), what);
        Near(appliedPerImage[0], images * 0.25, images, 0.25, "images with no op applied");
        Near(appliedPerImage[1], images * 0.5, images, 0.5, "images with one op applied");
        Near(appliedPerImage[2], images * 0.25, images, 0.25, "images with two");
        Near(repeats, images * 0.25 / 15, images, 0.25 / 15, "the same op twice (choice with replacement)");
        foreach (var op in ra.Ops) Near(perOp[(int)op], draws / 15.0, draws, 1 / 15.0, $"{op} chosen");
        Assert.That(perOp.Where((_, k) => !ra.Ops.Contains((RandAugmentOp)k)).Sum(), Is.Zero, "only the policy's ops");
        double mean = sum / draws, std = Math.Sqrt(sumSquares / draws - mean * mean);
        Assert.That(mean, Is.EqualTo(9.0).Within(5 * 0.5 / Math.Sqrt(draws)), "mean magnitude");
        Assert.That(std, Is.EqualTo(0.5).Within(0.01), "magnitude std (the clip at 10 cuts 2.3% of the tail)");
        Near(clipped, draws * 0.02275, draws, 0.02275, "magnitudes clipped at 10 (P(z ≥ 2))");
        Near(negativeRotations, rotations * 0.5, rotations, 0.5, "negative rotations");
    }

    [Test]
    public void AugmentationIsAFunctionOfTheSeed()
    {
        var rgb = File.ReadAllBytes(Path.Combine(Dir, "source.rgb"));
        var augmentation = new TrainAugmentation(true, RandAugment.Parse(PeftRecipe.SctRandAugment, Normalization.ImageNet));
        byte[] Run(ulong seed)
        {
            var copy = rgb.ToArray();
            augmentation.Apply(copy, 37, 48, seed);
            return copy;
        }
        Assert.That(Run(5), Is.EqualTo(Run(5)), "same seed, same bytes");
        var distinct = Enumerable.Range(0, 20).Select(s => Convert.ToHexString(Run((ulong)s))).Distinct().Count();
        Assert.That(distinct, Is.GreaterThanOrEqualTo(15), "different seeds give different images (a few draw nothing and no flip)");
    }

    [Test]
    public void TrainingBatchesAreAugmentedPerImage()
    {
        string root = Files.TempDir();
        try
        {
            var list = Engine.Data.ImageList.Read(MiniVtab.Write(root, "quadrant", train: 12, test: 4), "train800val200", 4);
            using var cache = Engine.Data.ImageCache.Open(list, 24, Path.Combine(root, "cache"));
            var augmentation = PeftRecipe.For("sct", "dtd").TrainAugmentation(Normalization.ImageNet);
            int[] indices = [5, 0, 7, 7, 2, 9, 1, 3];
            const ulong seed = 99;
            int floats = cache.ImageBytes, changed = 0;
            var batch = new float[indices.Length * floats];
            cache.FillBatch(indices, Normalization.ImageNet, batch, augmentation, seed);
            for (int i = 0; i < indices.Length; i++)
            {
                var pixels = cache.Pixels(indices[i]).ToArray();
                var expected = new float[floats];
                augmentation.Apply(pixels, 24, 24, CounterRng.Hash(seed, (ulong)i));
                Normalization.ImageNet.Normalize(pixels, expected);
                Assert.That(batch.AsSpan(i * floats, floats).ToArray(), Is.EqualTo(expected), $"image {i}: its own seed");
                changed += pixels.SequenceEqual(cache.Pixels(indices[i]).ToArray()) ? 0 : 1;
            }
            Assert.That(changed, Is.GreaterThanOrEqualTo(5), "most images change (an image keeps its pixels only without a flip and with no op)");
            Assert.That(batch.AsSpan(2 * floats, floats).SequenceEqual(batch.AsSpan(3 * floats, floats)), Is.False, "one image twice in a batch: two augmentations");
        }
        finally { Directory.Delete(root, true); }
    }
}
