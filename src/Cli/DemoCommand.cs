using System.CommandLine;
using System.Diagnostics;
using Engine.Autograd;
using Engine.Kernels.Cpu;
using Engine.Models.Demo;
using Engine.Models.Vit;
using Engine.Models.Peft;
using Engine.Models.Training;
using Engine.Optim;

namespace Engine.Cli;

/// <summary><c>peft demo</c>: trains a tiny ViT on a generated image task and prints the loss falling and the
/// held-out accuracy rising. A real end-to-end run of the engine (ops, autograd, AdamW) in seconds on a CPU.</summary>
public static class DemoCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var steps = new Option<int>("--steps") { Description = "Training steps", DefaultValueFactory = _ => 300 }.AtLeast(1);
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var lr = new Option<float>("--lr") { Description = "Peak AdamW learning rate (cosine decay)", DefaultValueFactory = _ => 2e-3f }.Positive();
        var seed = new Option<ulong>("--seed") { Description = "Seed for data, initialisation and drop-path", DefaultValueFactory = _ => 1 };
        var device = DeviceOption.Create();
        var command = new Command("demo", "Train a tiny ViT on a generated pattern-detection image task and report loss and accuracy.")
        {
            steps, batch, lr, seed, device,
        };
        command.SetAction(r => Run(r.GetValue(steps), r.GetValue(batch), r.GetValue(lr), r.GetValue(seed), r.GetValue(device)!));
        return command;
    }

    static int Run(int steps, int batchSize, float peakLr, ulong seed, string deviceName)
    {
        var config = new VitConfig { img_size = 16, patch_size = 4, in_chans = 1, embed_dim = 48, depth = 2, num_heads = 4, mlp_ratio = 2, num_classes = 4, drop_path_rate = 0.05f };
        var device = DeviceOption.Resolve(deviceName);
        var task = new PatternTask(config.in_chans, config.img_size, config.patch_size, config.num_classes, seed);
        using var model = new VisionTransformer(device, config, seed);
        using var opt = new Adam(model.Parameters, new AdamOptions { LearningRate = peakLr, WeightDecay = 0.05f });
        WeightDecayRules.Apply(opt, WeightDecayRule.MatricesOnly, 0.05f);
        var (evalX, evalY) = task.Batch(1024, ulong.MaxValue);
        using var evalInput = Tensor.FromArray(device, evalX, evalY.Length, config.in_chans, config.img_size, config.img_size);

        Console.WriteLine($"demo: ViT ({config.img_size}×{config.img_size}, patch {config.patch_size}, {model.Parameters.Sum(p => p.Count):N0} parameters) on a {config.num_classes}-class " +
                          $"pattern task, {steps} steps of {batchSize}, on {(device is CudaDevice cuda ? cuda.Runtime.Description : $"the CPU ({CpuParallel.Threads} thread(s), GEMM {CpuGemm.Isa})")}");
        Console.WriteLine($"chance accuracy {100.0 / config.num_classes:F1}%; held-out accuracy at step 0: {Accuracy(model, evalInput, evalY):F1}%");
        Console.WriteLine(" step      loss   train acc   held-out acc   img/s");
        using var trainStep = new TrainStep(opt) { Context = "demo", Weights = model.Parameters };
        var clock = Stopwatch.StartNew();
        double lossSum = 0;
        int correct = 0, seen = 0, window = 0, printEvery = Math.Max(1, steps / 10);
        for (int step = 1; step <= steps; step++)
        {
            opt.LearningRate = peakLr * 0.5f * (1 + MathF.Cos(MathF.PI * (step - 1) / steps));
            var (x, y) = task.Batch(batchSize, (ulong)step);
            using var input = Tensor.FromArray(device, x, batchSize, config.in_chans, config.img_size, config.img_size);
            using var targets = Tensor.FromArray(device, y, batchSize);
            lossSum += trainStep.Run(() => model.Forward(input, trainSeed: (ulong)step), logits => Ops.CrossEntropy(logits, targets),
                logits => correct += Data.Batching.CountCorrect(logits.ToArray(), config.num_classes, y));
            seen += batchSize;
            window++;
            if (step % printEvery == 0 || step == steps)
            {
                Console.WriteLine($"{step,5} {lossSum / window,9:F4} {100.0 * correct / seen,10:F1}% {Accuracy(model, evalInput, evalY),13:F1}% {step * batchSize / clock.Elapsed.TotalSeconds,7:F0}");
                lossSum = 0;
                correct = seen = window = 0;
            }
        }
        Console.WriteLine($"done in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

    static double Accuracy(VisionTransformer model, Tensor input, int[] labels)
    {
        using var _ = Tape.NoGrad();
        using var logits = model.Forward(input);
        return 100.0 * Data.Batching.CountCorrect(logits.ToArray(), model.Config.num_classes, labels) / labels.Length;
    }
}
