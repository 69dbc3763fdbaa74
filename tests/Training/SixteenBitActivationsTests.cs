using Engine.Kernels;
using Engine.Models;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>Under bf16 or fp16 GEMMs the models write in 16 bits the values that only products read (the norms before qkv and
/// fc1, GELU's output before fc2, SSF's product gradients, the unfused attention's q, k, v, dO and dZ, fc1's gradient
/// copy; qkv itself where the attention reads it so: vit64 on CUDA). The products round those values the same way, so whole training runs are bit for bit the runs with nothing in
/// 16 bits (<see cref="Ops.SaveGemmOperandsInGemmPrecision"/> off).</summary>
[TestFixture, NonParallelizable]
public class SixteenBitActivationsTests
{
    const int Size = TinyModels.Size, Classes = TinyModels.Classes;

    /// <summary>Six AdamW steps (<see cref="GraphCheck.Train"/>; fp16 with a loss scaler) on the unfused attention (the
    /// path the 16-bit heads take), with or without 16-bit values between the ops.</summary>
    static GraphCheck.Result Train(string family, string method, Device device, Precision precision, bool sixteenBit)
    {
        var (saves, path) = (Ops.SaveGemmOperandsInGemmPrecision, Ops.DefaultAttentionPath);
        try
        {
            Ops.SaveGemmOperandsInGemmPrecision = sixteenBit;
            Ops.DefaultAttentionPath = AttentionPath.Unfused;
            return GraphCheck.Train(TinyModels.Create(family, device), Classes, method, graph: false, precision: precision);
        }
        finally
        {
            (Ops.SaveGemmOperandsInGemmPrecision, Ops.DefaultAttentionPath) = (saves, path);
        }
    }

    [Test]
    public void TrainingIsBitForBitTheRunWithNothingInSixteenBits([Values("vit", "vit64", "swin", "convnext")] string family,
        [Values("full", "ssf")] string method, [Values(Precision.BF16, Precision.FP16)] Precision precision, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        var reference = Train(family, method, device, precision, sixteenBit: false);
        var sixteen = Train(family, method, device, precision, sixteenBit: true);
        Assert.That(sixteen.Losses.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(reference.Losses.Select(BitConverter.SingleToInt32Bits)),
            $"losses {string.Join(", ", sixteen.Losses)} against {string.Join(", ", reference.Losses)}");
        for (int p = 0; p < reference.Parameters.Length; p++)
            Assert.That(sixteen.Parameters[p].Select(BitConverter.SingleToInt32Bits), Is.EqualTo(reference.Parameters[p].Select(BitConverter.SingleToInt32Bits)),
                $"parameter {p} after six steps");
        Assert.That(reference.Parameters.Zip(reference.Initial).Any(p => !p.First.SequenceEqual(p.Second)), "training moved the parameters");
    }
}
