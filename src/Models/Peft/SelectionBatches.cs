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
