using Engine.Data;
using Engine.Imaging;
using Engine.Models.Synthetic;

namespace Engine.Tests;

/// <summary>The synthetic tasks: reproducible, every class drawn, written in the VTAB-1k layout the loader reads.</summary>
[TestFixture]
public class SyntheticTaskTests
{
    [Test]
    public void EveryTaskIsReproducibleAndDrawsEveryClass()
    {
        foreach (var task in SyntheticTasks.All.Append(SyntheticTasks.Source))
        {
            var labels = new HashSet<int>();
            for (int i = 0; i < 40 * task.Classes; i++)
            {
                var (image, label) = SyntheticTasks.Generate(task, 3, 0, i);
                Assert.That(label, Is.InRange(0, task.Classes - 1));
                Assert.That((image.Width, image.Height), Is.EqualTo((SyntheticTasks.ImageSize, SyntheticTasks.ImageSize)));
                labels.Add(label);
                if (i < 3) Assert.That(SyntheticTasks.Generate(task, 3, 0, i).Image.Rgb, Is.EqualTo(image.Rgb), $"{task.Name}: same (seed, index), same pixels");
            }
            Assert.That(labels, Has.Count.EqualTo(task.Classes), $"{task.Name}: every class appears");
            Assert.That(SyntheticTasks.Generate(task, 4, 0, 0).Image.Rgb, Is.Not.EqualTo(SyntheticTasks.Generate(task, 3, 0, 0).Image.Rgb), $"{task.Name}: the seed matters");
        }
    }

    [Test]
    public void ImagesOfOneClassDifferAndClassesDifferOnAverage()
    {
        // A crude check that the label is in the pixels: the mean image of each class differs from every other class's
        // more than two halves of one class differ from each other (the background randomness averages out).
        foreach (var task in SyntheticTasks.All)
        {
            int perClass = 60, pixels = SyntheticTasks.ImageSize * SyntheticTasks.ImageSize * 3;
            var sums = new double[task.Classes, 2, pixels];
            var counts = new int[task.Classes, 2];
            for (int i = 0; counts.Cast<int>().Min() < perClass / 2 && i < 100 * perClass * task.Classes; i++)
            {
                var (image, label) = SyntheticTasks.Generate(task, 9, 0, i);
                int half = counts[label, 0] <= counts[label, 1] ? 0 : 1;
                counts[label, half]++;
                for (int p = 0; p < pixels; p++) sums[label, half, p] += image.Rgb[p];
            }
            double Distance(int a, int ha, int b, int hb)
            {
                double d = 0;
                for (int p = 0; p < pixels; p++)
                {
                    double x = sums[a, ha, p] / counts[a, ha] - sums[b, hb, p] / counts[b, hb];
                    d += x * x;
                }
                return Math.Sqrt(d / pixels);
            }
            double within = Enumerable.Range(0, task.Classes).Average(c => Distance(c, 0, c, 1));
            double between = Enumerable.Range(0, task.Classes).SelectMany(a => Enumerable.Range(0, task.Classes).Where(b => b != a).Select(b => Distance(a, 0, b, 1))).Average();
            TestContext.Out.WriteLine($"{task.Name,-14} within {within:F2}  between {between:F2}");
            if (task.Name is not ("count" or "nearest_size" or "textures")) // classes differ in structure, not in the mean image
                Assert.That(between, Is.GreaterThan(within * 1.1), task.Name);
        }
    }

    [Test]
    public void WritesTaskFoldersTheLoaderReads()
    {
        if (!Jpeg.IsAvailable(out var reason)) Assert.Ignore(reason);
        string root = Files.TempDir();
        try
        {
            var folders = SyntheticTasks.Write(root, testImages: 12, tasks: ["lesion", "orientation"], trainImages: 16, valImages: 4);
            Assert.That(folders.Select(Path.GetFileName), Is.EqualTo(new[] { "lesion", "orientation" }));
            foreach (var folder in folders)
            {
                var classes = SyntheticTasks.All.First(t => t.Name == Path.GetFileName(folder)).Classes;
                Assert.That(ImageList.Read(folder, "train800val200", classes).Count, Is.EqualTo(20));
                var test = ImageList.Read(folder, "test", classes);
                Assert.That(test.Count, Is.EqualTo(12));
                var (image, label) = SyntheticTasks.Generate(SyntheticTasks.All.First(t => t.Name == Path.GetFileName(folder)), 2026, 2, 5);
                Assert.That(test.Labels[5], Is.EqualTo(label));
                var decoded = ImageFile.Read(test.Files[5]);
                double error = decoded.Rgb.Zip(image.Rgb, (a, b) => Math.Abs(a - b)).Average();
                Assert.That(error, Is.LessThan(8), "the JPEG holds the generated image (quality 90)");
            }
            var stamp = File.GetLastWriteTimeUtc(Path.Combine(folders[0], "task.json"));
            SyntheticTasks.Write(root, testImages: 12, tasks: ["lesion"], trainImages: 16, valImages: 4);
            Assert.That(File.GetLastWriteTimeUtc(Path.Combine(folders[0], "task.json")), Is.EqualTo(stamp), "a complete folder is kept");
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }
}
