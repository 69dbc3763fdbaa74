namespace Engine.Data;

/// <summary>Epoch order and top-1 counting, shared by the training loops, selection passes and evaluations.</summary>
public static class Batching
{
    /// <summary>One pass over <paramref name="count"/> items: shuffled by <paramref name="seed"/> and cut into full
    /// batches (drop_last, as the reference loaders), or one batch of everything when there are fewer items than a batch.</summary>
    public static List<int[]> Shuffled(int count, int batchSize, ulong seed)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "the batch size must be at least 1");
        var order = Enumerable.Range(0, count).ToArray();
        new Random((int)(seed % int.MaxValue)).Shuffle(order);
        if (order.Length < batchSize) return [order];
        return [.. Enumerable.Range(0, order.Length / batchSize).Select(b => order[(b * batchSize)..((b + 1) * batchSize)])];
    }

    /// <summary>How many rows of <paramref name="logits"/> [n, classes] have their largest value (the first, on ties) at
    /// the row's label.</summary>
    public static int CountCorrect(ReadOnlySpan<float> logits, int classes, ReadOnlySpan<int> labels)
    {
        if (logits.Length != labels.Length * classes) throw new ArgumentException($"{logits.Length} logits for {labels.Length} labels of {classes} classes");
        int correct = 0;
        for (int i = 0; i < labels.Length; i++)
        {
            var row = logits.Slice(i * classes, classes);
            int best = 0;
            for (int c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
            if (best == labels[i]) correct++;
        }
        return correct;
    }
}
