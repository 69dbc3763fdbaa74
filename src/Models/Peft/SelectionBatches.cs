using Engine.Data;
using Engine.Imaging;
using Engine.Kernels;

namespace Engine.Models.Peft;

/// <summary>
/// The image batches a selection pass reads (<see cref="SctSelection.Compute"/>, <see cref="GpsSelection.Compute"/>),
/// from labelled image files: the images shuffled by the seed and cut into full batches (the last partial batch
/// dropped, as the reference loaders; one batch of everything when there are fewer images than a batch). For GPS each
/// batch holds two views per image, the B first views then the B second views, each a seeded
/// <see cref="ContrastiveViews"/> view (or the plain resized image when not augmenting).
/// </summary>
public static class SelectionBatches
{
    /// <summary>
    /// Streams the batches of images [views·B, 3, size, size] with a label per row, decoding the files as it goes
    /// (each tensor is disposed when the next is produced); <paramref name="progress"/> gets (batches done, total).
    /// </summary>
    /// <param name="items">Image files and labels.</param>
    /// <param name="views">1 (SCT) or 2 (GPS's two views).</param>
    /// <param name="augment">With two views: GPS's augmentation; otherwise both views are the plain resized image.</param>
    /// <param name="size">Side of the square model input.</param>
    /// <param name="normalization">Input normalisation.</param>
    /// <param name="batchSize">Images per batch (before the views).</param>
    /// <param name="seed">Seed of the shuffle and the augmentations.</param>
    /// <param name="device">Where the batch tensors live.</param>
    /// <param name="progress">Called with (batches done, total) after each batch.</param>
    public static IEnumerable<(Tensor Images, int[] Labels)> Stream(IReadOnlyList<(string File, int Label)> items, int views, bool augment,
        int size, Normalization normalization, int batchSize, ulong seed, Device device, Action<int, int>? progress = null)
    {
        var batches = Batching.Shuffled(items.Count, batchSize, seed);
        int pixels = 3 * size * size, done = 0;
        foreach (var order in batches)
        {
            int n = order.Length;
            var x = new float[(long)views * n * pixels];
            var labels = new int[views * n];
            Parallel.For(0, n, i =>
            {
                var (file, label) = items[order[i]];
                var image = ImageFile.Read(file);
                for (int v = 0; v < views; v++)
                {
                    var target = x.AsSpan((v * n + i) * pixels, pixels);
                    if (views == 1 || !augment) normalization.ResizeInto(image, size, target);
                    else ContrastiveViews.Write(image, size, normalization, CounterRng.Hash(seed, (ulong)(order[i] * 2 + v)), target);
                    labels[v * n + i] = label;
                }
            });
            using var tensor = Tensor.FromArray(device, x, views * n, 3, size, size);
            yield return (tensor, labels);
            progress?.Invoke(++done, batches.Count);
        }
    }
}

/// <summary>The one implementation of a method's selection pass over labelled image files (fine-tuning runs and
/// <c>peft select</c> both call it): the batches its <see cref="SelectionPassInfo"/> asks for, then its computation,
/// written to a selection file.</summary>
public static class SelectionPass
{
    /// <summary>
    /// Runs <paramref name="method"/>'s pass on <paramref name="model"/> over <paramref name="items"/> and writes the
    /// selection to <paramref name="path"/> (atomically, with <paramref name="metadata"/>); returns its summary line.
    /// </summary>
    /// <param name="method">A method with a selection pass (SCT, GPS).</param>
    /// <param name="model">The model holding the pretrained weights.</param>
    /// <param name="items">Image files and labels.</param>
    /// <param name="settings">K, K per stage, seed.</param>
    /// <param name="normalization">Input normalisation.</param>
    /// <param name="path">The selection file to write.</param>
    /// <param name="metadata">Written into the file.</param>
    /// <param name="batchSize">Images per batch: the method's own (<see cref="SelectionPassInfo.BatchSize"/>) when it has
    /// one, else the recipe's training batch; the caller resolves it (<see cref="BatchSizeOf"/>).</param>
    /// <param name="augment">False: every view is the plain resized image (exact comparisons with other implementations).</param>
    /// <param name="progress">Called with (batches done, total).</param>
    /// <exception cref="ArgumentException">The method has no selection pass, or the settings do not fit it.</exception>
    public static string Run(PeftMethodInfo method, IImageClassifier model, IReadOnlyList<(string File, int Label)> items, SelectionSettings settings,
        Normalization normalization, string path, IReadOnlyDictionary<string, string> metadata, int batchSize, bool augment = true,
        Action<int, int>? progress = null)
    {
        var pass = method.Selection ?? throw new ArgumentException($"{method.Name} has no selection pass");
        if (settings.StageK != null && !pass.TakesStageK) throw new ArgumentException($"{method.Name} takes one K, not a K per stage");
        int batch = batchSize;
        if (batch < 1) throw new ArgumentException($"selection batch size must be at least 1 (got {batch})");
        var device = model.Parameters[0].Device;
        var batches = SelectionBatches.Stream(items, pass.Views, augment, model.ImageSize, normalization, batch, settings.Seed, device, progress);
        return pass.ComputeAndSave(model, batches, settings, path, metadata);
    }

    /// <summary>The selection pass's batch for <paramref name="recipe"/>: the method's own size, or the recipe's training batch.</summary>
    public static int BatchSizeOf(PeftMethodInfo method, PeftRecipe recipe) => method.Selection?.BatchSize ?? recipe.BatchSize;

    /// <summary>Number of batches <see cref="Run"/> reads for <paramref name="images"/> images in batches of <paramref name="batchSize"/>.</summary>
    public static int BatchCount(int images, int batchSize, ulong seed) => Batching.Shuffled(images, batchSize, seed).Count;
}
