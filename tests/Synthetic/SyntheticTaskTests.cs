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
    public void WritesTaskFoldersTheLoaderReads()
    {
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
                // JPEG is lossy (4:2:0 chroma on noisy 40×40 images): the file must be far closer to its own image than to another.
                double own = decoded.Rgb.Zip(image.Rgb, (a, b) => Math.Abs(a - b)).Average();
                double other = decoded.Rgb.Zip(ImageFile.Read(test.Files[6]).Rgb, (a, b) => Math.Abs(a - b)).Average();
                TestContext.Out.WriteLine($"{Path.GetFileName(folder)}: mean |JPEG − generated| {own:F2}, against another image {other:F2}");
                Assert.That(own, Is.LessThan(other / 2), "the JPEG holds the generated image");
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
