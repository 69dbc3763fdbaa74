using Engine.Autograd;
using Engine.Checkpoints;
using Engine.Models.ConvNeXt;
using Engine.Models.Export;
using Engine.Models.Peft;
using Engine.Models.Swin;
using Engine.Models.Training;
using Engine.Models.Vit;
using Engine.Models;
using Engine.Optim;
using Engine;

namespace Engine.Tests.Docs;

// Every C# block of README.md and docs/*.md, compiled here: DocSnippetTests checks that each block is one of these
// regions word for word (its using directives among this file's), and runs the README's.
#pragma warning disable CS0219, IDE0059 // a snippet may show a value it does not use
internal static class DocSnippets
{
    /// <summary>README.md.</summary>
    internal static void ReadmeQuickStart(float[] inputs, int[] labels)
    {
        #region ReadmeQuickStart
        var dev = Device.Cpu;
        var w = Tensor.Parameter(dev, "fc.weight", 10, 64);         // trainable leaf, [out, in]
        var b = Tensor.Parameter(dev, "fc.bias", 10);
        Init.TruncatedNormal(w, std: 0.02f, seed: 1);
        using var opt = new Adam([w, b], new AdamOptions { LearningRate = 1e-3f, WeightDecay = 0.05f });

        using var x = Tensor.FromArray(dev, inputs, 32, 64);         // host → device copy
        using var y = Tensor.FromArray(dev, labels, 32);             // int32 class targets
        var tape = new Tape();
        opt.ZeroGrad();
        using (tape.Record())
        {
            using var logits = Ops.Linear(Ops.Gelu(x), w, b);
            using var loss = Ops.CrossEntropy(logits, y, smoothing: 0.1f);
            Numerics.ThrowIfNonFinite(loss, "loss");                // divergence check
            tape.Backward(loss);                                     // parameter gradients accumulate (+=)
        }
        opt.Step();
        #endregion
    }

    /// <summary>README.md.</summary>
    internal static void ReadmeFineTuneWithAMethod(Tensor images, Tensor targets, string runFolder)
    {
        #region ReadmeFineTuneWithAMethod
        using var model = ImageModels.Create(Device.Cpu, "models/synthetic-vit/config.json", numClasses: 6);
        model.Load("models/synthetic-vit/weights.safetensors", LoadMode.NewHead);
        var info = PeftMethods.Get("ssf");                           // or full, linear, bias, sct, gps, lora, adapter, adaptformer, vpt
        using var method = info.Create(new MethodSetup(Seed: 42));  // SCT and GPS take the file their selection pass wrote
        method.Apply(model);                                         // freezes what does not train, adds what the method adds
        var recipe = PeftRecipe.For(info.Name);                      // the official scripts' hyperparameters
        using var opt = new Adam(method.Trainable(model), recipe.AdamOptions);
        recipe.ConfigureWeightDecay(opt);
        var step = new TrainStep(opt) { Context = "ssf" };          // forward, loss, finite check, backward, step, zero
        float loss = step.Run(() => model.Forward(images, trainSeed: 1), logits => Ops.CrossEntropy(logits, targets));
        method.SaveTrained(model, Path.Combine(runFolder, "ssf.safetensors"));   // only what trained, with its name
        #endregion
    }

    /// <summary>README.md.</summary>
    internal static void ReadmeExport(IImageClassifier model, PeftMethod method)
    {
        #region ReadmeExport
        method.Merge();                                              // SSF, GPS, bias, linear, full fold into the weights
        ModelExport.ToOnnx(model, "model.onnx", new OnnxExportOptions { Opset = 17 });   // eval mode, dynamic batch
        // SCT does not fold: pass it, and its modules are written as nodes: new OnnxExportOptions { Method = sct }
        #endregion
    }

    /// <summary>docs/cuda.md.</summary>
    internal static void CudaDeviceOps(float[] data, Tensor w, Tensor b)
    {
        #region CudaDeviceOps
        if (!CudaDevice.TryOpen(out var gpu, out var reason)) Console.WriteLine(reason);   // "no NVIDIA driver (...)", "no GPU ..."
        using var x = Tensor.FromArray(gpu!, data, 8, 197, 768);                             // device memory
        using var y = Ops.LayerNorm(x, w, b, 1e-6f);                                        // a kernel launch on the device's stream
        #endregion
    }

    /// <summary>docs/cuda.md.</summary>
    internal static unsafe void CudaGraphCapture(CudaDevice gpu, Tensor x, Tensor output, float[] nextBatch)
    {
        #region CudaGraphCapture
        using var graph = gpu.Capture(() =>                     // records, runs nothing yet
        {
            using var y = Ops.Gelu(x);
            gpu.Kernels.Copy(output.Data, y.Data, output.Count, false);    // results: into tensors made before the capture
        });
        x.CopyFrom(nextBatch);                                 // inputs: written into the captured tensors
        graph.Replay();                                        // every kernel and GEMM recorded, with one launch
        #endregion
    }

    /// <summary>docs/methods.md.</summary>
    internal static void MethodsTrainSaveMerge(VisionTransformer vit, IEnumerable<(Tensor Images, int[] Labels)> batches, IEnumerable<(Tensor Images, int[] Labels)> viewBatches)
    {
        #region MethodsTrainSaveMerge
        // SSF: train, save the trained part, fold it into a plain checkpoint.
        using var ssf = new Ssf(seed: 42);
        ssf.Apply(vit);                                            // freezes the backbone, adds γ/β, the head trains
        var recipe = PeftRecipe.For("ssf", "cifar");               // the official script's values for that VTAB task
        using var opt = new Adam(ssf.Trainable(vit), recipe.AdamOptions);
        recipe.ConfigureWeightDecay(opt);                          // SSF: weight decay on head.weight only
        // per epoch: opt.LearningRate = recipe.LearningRateAt(epoch); forward, Ops.CrossEntropy, tape.Backward, opt.Step()
        ssf.SaveTrained(vit, "ssf.safetensors");                   // scales, shifts, head (peft_method = ssf in the metadata)
        ssf.Merge(); vit.Save("merged.safetensors");               // W'[o] = γ_o·W[o], b'_o = γ_o·b_o + β_o: no extra parameters

        // SCT: score the channels on the training images (eval mode), then train the 96×96 modules.
        var channels = SctSelection.Compute(vit, batches, k: 96);  // batches: (images [B,3,224,224], labels[B])
        using var sct = new Sct(channels);

        // GPS: one epoch of the supervised contrastive loss on two views per image, top-K per row, sparse training.
        var entries = GpsSelection.Compute(vit, viewBatches, k: 1); // images [2B,...]: first views then second views
        using var gps = new Gps(entries);                          // sparse: only the selected gradient entries, Adam state for them
        // new Gps(entries, sparse: false) trains the same entries through a dense masked gradient (the reference's way).

        // Any trained file back onto base weights:
        using var method = PeftMethod.ForTrainedFile("trained.safetensors");  // SCT/GPS rebuilt from the stored selection
        method.Apply(vit); method.LoadTrained(vit, "trained.safetensors");
        #endregion
    }

    /// <summary>docs/models.md.</summary>
    internal static void ModelsVit(Tensor images)
    {
        #region ModelsVit
        var config = VitConfig.Presets["vit_base_patch16_224"] with { num_classes = 100 };   // or VitConfig.FromJson("vit.json")
        using var vit = new VisionTransformer(Device.Cpu, config, seed: 0);                     // timm init
        var report = vit.Load("B_16-i21k.npz", LoadMode.NewHead);     // Google npz or timm .safetensors; backbone strict, fresh head
        using var logits = vit.Forward(images);                       // images [B,3,224,224]; eval mode
        ulong step = 1;                                               // a seed per training step (ulong)
        using var trainLogits = vit.Forward(images, trainSeed: step); // dropout + stochastic depth from the seed
        vit.Save("finetuned.safetensors");                           // timm keys, atomic write
        #endregion
    }

    /// <summary>docs/models.md.</summary>
    internal static void ModelsConvNeXt(Tensor images)
    {
        #region ModelsConvNeXt
        using var model = new ConvNeXt(Device.Cpu, ConvNeXtConfig.Presets["convnext_base"] with { num_classes = 100 });
        model.Load("convnext_base_22k_224.pth", LoadMode.NewHead);   // original keys renamed to timm's; or timm .safetensors
        using var logits = model.Forward(images);                   // [B,3,224,224] → [B,100]
        #endregion
    }

    /// <summary>docs/models.md.</summary>
    internal static void ModelsSwin(Tensor images)
    {
        #region ModelsSwin
        using var model = new Swin(Device.Cpu, SwinConfig.Presets["swin_base_patch4_window7_224"] with { num_classes = 100 });
        model.Load("swin_base_patch4_window7_224_22k.pth", LoadMode.NewHead);   // original keys, buffers recomputed; or timm
        using var logits = model.Forward(images);                              // [B,3,224,224] → [B,100]
        #endregion
    }

    /// <summary>docs/models.md.</summary>
    internal static void ModelsAnyFamily()
    {
        #region ModelsAnyFamily
        // A preset or a JSON config with timm's field names (window_size → Swin, dims → ConvNeXt, otherwise ViT).
        using IImageClassifier model = ImageModels.Create(Device.Cpu, "convnext_base", numClasses: 100, dropPath: 0.1f);
        model.Load("convnext_base_22k_224.pth", LoadMode.NewHead);
        #endregion
    }

    /// <summary>docs/vtab.md.</summary>
    internal static void VtabRunFromAProgram()
    {
        #region VtabRunFromAProgram
        var config = new RunConfig
        {
            Task = "dtd", TaskFolder = "/data/vtab-1k/dtd", Classes = 47, Model = "vit_base_patch16_224",
            Weights = "/models/B_16-i21k.npz", Recipe = PeftRecipe.For("gps", "dtd") with { Epochs = 50 },
        };
        RunResult result = FineTuneRun.Execute(config, "runs/dtd/gps", Device.Cpu,
            new RunOptions { CacheDir = "/tmp/vtab-cache", Log = Console.WriteLine });   // Resume = true continues a run
        Console.WriteLine($"best {result.BestAccuracy:F2}%, final {result.FinalAccuracy:F2}%");
        #endregion
    }
}
