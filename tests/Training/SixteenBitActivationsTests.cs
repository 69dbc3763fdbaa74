using Engine.Kernels;
using Engine.Models;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>Under bf16 or fp16 GEMMs the models write in 16 bits the values that only products read (the norms before qkv and
/// fc1, GELU's output before fc2, SSF's product gradients, the unfused attention's q, k, v, dO and dZ, fc1's gradient
/// copy; qkv itself where the attention reads it so: vit64 on CUDA). The products (and GPS's selected entries) round those
/// values the same way, so whole training runs are bit for bit the runs with nothing in 16 bits
/// (<see cref="Ops.SaveGemmOperandsInGemmPrecision"/> off).</summary>
[TestFixture, NonParallelizable]
public class SixteenBitActivationsTests
{
    const int Size = TinyModels.Size, Classes = TinyModels.Classes;

    /// <summary>Six AdamW steps (<see cref="GraphCheck.Train"/>; fp16 with a loss scaler) on the unfused attention (the
    /// path the 16-bit heads take), with or without 16-bit values between the ops, and with fc2's input kept or computed
    /// again from fc1's kept pre-activation.</summary>
    static GraphCheck.Result Train(string family, string method, Device device, Precision precision, bool sixteenBit, bool recompute = true)
    {
        var previous = (Ops.SaveGemmOperandsInGemmPrecision, Ops.RecomputeGeluOutputs, Ops.DefaultAttentionPath);
        try
        {
            (Ops.SaveGemmOperandsInGemmPrecision, Ops.RecomputeGeluOutputs, Ops.DefaultAttentionPath) = (sixteenBit, recompute, AttentionPath.Unfused);
            return GraphCheck.Train(TinyModels.Create(family, device), Classes, method, graph: false, precision: precision);
        }
        finally
        {
            (Ops.SaveGemmOperandsInGemmPrecision, Ops.RecomputeGeluOutputs, Ops.DefaultAttentionPath) = previous;
        }
    }

    [Test]
    public void TrainingIsBitForBitTheRunWithNothingInSixteenBits([Values("vit", "vit64", "swin", "convnext")] string family,
        [Values("full", "ssf", "gps", "adapter")] string method, [Values(Precision.BF16, Precision.FP16)] Precision precision, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        TrainingBits.AssertSame(Train(family, method, device, precision, sixteenBit: true), Train(family, method, device, precision, sixteenBit: false));
    }

    /// <summary>fc2 computing its input again from fc1's kept 16-bit pre-activation (<see cref="Ops.RecomputeGeluOutputs"/>)
    /// trains bit for bit as fc2 keeping it, with exactly that input's bytes fewer kept, wherever fc2's weight trains
    /// (full, and GPS's selected entries); the MLPs of ViT, Swin and ConvNeXt (whose fc2 is followed by the layer scale).</summary>
    [Test]
    public void RecomputingGeluOutputsIsBitForBitKeepingThem([Values("vit", "swin", "convnext")] string family,
        [Values("full", "gps")] string method, [Values(Precision.BF16, Precision.FP16)] Precision precision, [Values("cpu", "emulated-cuda")] string backend)
    {
        var device = Backends.Get(backend);
        var keeping = Train(family, method, device, precision, sixteenBit: true, recompute: false);
        var recomputing = Train(family, method, device, precision, sixteenBit: true);
        TrainingBits.AssertSame(recomputing, keeping);
        // The last batch (3 images): each MLP's hidden activation, tokens × 4·C values of 2 bytes, is no longer kept.
        long hidden = family switch
        {
            "vit" => (3 * 17 + 3 * 1) * 128, // 16 patches and the class token, C = 32; the last block runs the class token alone
            "swin" => 2 * 3 * 64 * 32 + 2 * 3 * 16 * 64, // two blocks of 8×8 tokens at C = 8, two of 4×4 at C = 16
            _ => 3 * 16 * 32 + 3 * 4 * 64, // one block at 4×4, C = 8; one at 2×2, C = 16
        };
        Assert.That(keeping.SavedBytes - recomputing.SavedBytes, Is.EqualTo(2 * hidden), "bytes no longer kept for the backward");
    }
}
