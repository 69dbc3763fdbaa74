using System.Diagnostics;
using Engine.Autograd;
using Engine.Imaging;
using Engine.Models.Peft;
using Engine.Models.Training;
using Engine.Models.Vit;
using Engine.Optim;

namespace Engine.Models.Synthetic;

/// <summary>
/// Pretrains a small model (the shipped ViT by default; any <see cref="IImageClassifier"/>) on <see cref="SyntheticTasks.Source"/> with images generated on the fly (never the same image
/// twice; preprocessing as the fine-tuning loader: Pillow-exact resize to the model's input, inception normalisation):
/// AdamW, linear warmup then cosine decay per step, label smoothing 0.1, weight decay on matrices only. Deterministic on
/// the CPU for a given seed and thread count.
/// </summary>
public static class SyntheticPretraining
{
    /// <summary>The shipped model's architecture: 32×32 input, 8×8 patches (16 tokens + class token), width 64, 4 blocks.</summary>
    public static VitConfig Config { get; } = new()
    {
        img_size = 32, patch_size = 8, in_chans = 3, embed_dim = 64, depth = 4, num_heads = 2, mlp_ratio = 2,
        num_classes = SyntheticTasks.Source.Classes, drop_path_rate = 0.05f,
    };

    /// <summary>Pretraining hyperparameters.</summary>
    public sealed record Options
    {
        /// <summary>Optimizer steps.</summary>
        public int Steps { get; init; } = 6000;
        /// <summary>Images per step.</summary>
        public int BatchSize { get; init; } = 64;
        /// <summary>Peak learning rate.</summary>
        public float LearningRate { get; init; } = 2e-3f;
        /// <summary>Warmup steps.</summary>
        public int WarmupSteps { get; init; } = 300;
        /// <summary>AdamW weight decay (matrices only).</summary>
        public float WeightDecay { get; init; } = 0.05f;
        /// <summary>Seed of the initialisation, the images and the drop-path masks.</summary>
        public ulong Seed { get; init; } = 7;
    }

    /// <summary>A batch of source images [n, 3, s, s] (normalised) and labels, from stream <paramref name="stream"/>.</summary>
    public static (float[] X, int[] Y) Batch(int imageSize, ulong seed, ulong stream, long first, int count)
    {
        int pixels = 3 * imageSize * imageSize;
        var x = new float[(long)count * pixels];
        var y = new int[count];
        Parallel.For(0, count, i =>
        {
            var (image, label) = SyntheticTasks.Generate(SyntheticTasks.Source, seed, stream, first + i);
            Normalization.Inception.ResizeInto(image, imageSize, x.AsSpan(i * pixels, pixels));
            y[i] = label;
        });
        return (x, y);
    }

    /// <summary>Trains <paramref name="model"/> (RGB input, a head of <see cref="SyntheticTasks.Source"/>'s classes) and
    /// returns the held-out accuracy (%) on 2,000 source images. <paramref name="log"/> gets a line every tenth of the run.</summary>
    public static double Run(IImageClassifier model, Options options, Device device, Action<string>? log = null)
    {
        int size = model.ImageSize;
        if (model.InChannels != 3) throw new ArgumentException($"the synthetic images are RGB but the model has {model.InChannels} input channels");
        using var opt = new Adam(model.Parameters, new AdamOptions { LearningRate = options.LearningRate, WeightDecay = options.WeightDecay });
        WeightDecayRules.Apply(opt, WeightDecayRule.MatricesExceptEmbeddings, options.WeightDecay);
        var (evalX, evalY) = Batch(size, options.Seed, stream: 1, 0, 2000);
        using var trainStep = new TrainStep(opt) { Context = "pretraining", Weights = model.Parameters };
        var clock = Stopwatch.StartNew();
        double lossSum = 0;
        int window = 0;
        for (int step = 0; step < options.Steps; step++)
        {
            opt.LearningRate = step < options.WarmupSteps
                ? options.LearningRate * (step + 1) / options.WarmupSteps
                : options.LearningRate * 0.5f * (1 + MathF.Cos(MathF.PI * (step - options.WarmupSteps) / Math.Max(1, options.Steps - options.WarmupSteps)));
            var (x, y) = Batch(size, options.Seed, stream: 0, (long)step * options.BatchSize, options.BatchSize);
            using var images = Tensor.FromArray(device, x, options.BatchSize, 3, size, size);
            using var targets = Tensor.FromArray(device, y, options.BatchSize);
            ulong stepSeed = Kernels.CounterRng.Hash(options.Seed, (ulong)step);
            lossSum += trainStep.Run(() => model.Forward(images, trainSeed: stepSeed), logits => Ops.CrossEntropy(logits, targets, smoothing: 0.1f));
            window++;
            if ((step + 1) % Math.Max(1, options.Steps / 10) == 0 || step + 1 == options.Steps)
            {
                log?.Invoke($"step {step + 1}/{options.Steps}: loss {lossSum / window:F3}, lr {opt.LearningRate:G3}, held-out {Accuracy(model, evalX, evalY, device):F1}%, " +
                            $"{(step + 1) * options.BatchSize / clock.Elapsed.TotalSeconds:F0} img/s");
                lossSum = 0;
                window = 0;
            }
        }
        return Accuracy(model, evalX, evalY, device);
    }

    static double Accuracy(IImageClassifier model, float[] x, int[] y, Device device)
    {
        using var _ = Tape.NoGrad();
        int s = model.ImageSize, pixels = 3 * s * s, correct = 0, classes = SyntheticTasks.Source.Classes;
        for (int start = 0; start < y.Length; start += 250)
        {
            int n = Math.Min(250, y.Length - start);
            using var images = Tensor.FromArray(device, x.AsSpan(start * pixels, n * pixels).ToArray(), n, 3, s, s);
            using var logits = model.Forward(images);
            correct += Data.Batching.CountCorrect(logits.ToArray(), classes, y.AsSpan(start, n));
        }
        return 100.0 * correct / y.Length;
    }
}
