using Engine.Models.Peft;
using Engine.Models.Training;

namespace Engine.Tests;

/// <summary>The report's table from run folders: the papers' column order, group means, the published rows.</summary>
[TestFixture]
public class VtabReportTests
{
    static void FakeRun(string runs, string task, string method, double final, double best, long trainable)
    {
        string dir = Path.Combine(runs, task, method);
        Directory.CreateDirectory(dir);
        new RunConfig { Task = task, TaskFolder = "/data/" + task, Classes = 4, Model = "vit_base_patch16_224", Recipe = PeftRecipe.For(method, task) }
            .Save(Path.Combine(dir, "config.json"));
        File.WriteAllText(Path.Combine(dir, "result.json"), System.Text.Json.JsonSerializer.Serialize(
            new RunResult(task, method, 110, final, best, 90, trainable, 10), RunConfig.Json));
    }

    [Test]
    public void TablesFollowThePapersOrderWithGroupMeansAndPublishedRows()
    {
        string runs = Files.TempDir();
        try
        {
            // kitti (Structured) before dtd (Natural) on disk; the table must put dtd first.
            FakeRun(runs, "kitti", "ssf", 70, 80, 240_000);
            FakeRun(runs, "dtd", "ssf", 71, 75, 260_000);
            FakeRun(runs, "dtd", "gps", 72, 76, 250_000);
            Directory.CreateDirectory(Path.Combine(runs, "kitti", "gps"));
            new RunConfig { Task = "kitti", TaskFolder = "/data/kitti", Classes = 4, Model = "m", Recipe = PeftRecipe.For("gps") }
                .Save(Path.Combine(runs, "kitti", "gps", "config.json")); // started, not finished
            var report = VtabReport.Collect(runs);
            Assert.That(report.Unfinished, Is.EqualTo(1));
            var md = report.Markdown();
            TestContext.Out.WriteLine(md);
            Assert.That(md, Does.Contain("| method | params (M) | dtd | kitti | Natural | Structured | mean |"));
            Assert.That(md, Does.Contain("| ssf | 0.25 | 75.0 | 80.0 | 75.0 | 80.0 | 77.5 |"), "best accuracies, group means, mean over tasks");
            Assert.That(md, Does.Contain("| ssf | 0.25 | 71.0 | 70.0 | 71.0 | 70.0 | 70.5 |"), "final accuracies in the second table");
            Assert.That(md, Does.Contain("| gps | 0.25 | 76.0 | – | 76.0 | – | – |"), "a missing run leaves its cell and means empty");
            Assert.That(md, Does.Contain("| SSF (paper) | – | 75.1 | 80.6 | 75.1 | 80.6 | 77.8 |"));
            Assert.That(md, Does.Contain("| GPS (paper) | – | 75.8 | 82.4 | 75.8 | 82.4 | 79.1 |"));
            Assert.That(md, Does.Contain("1 run(s) have no result yet"));
            var csv = report.Csv().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(csv[1..], Is.EqualTo(new[]
            {
                "dtd,Natural,ssf,71.00,75.00,90,110,260000,10.0", "dtd,Natural,gps,72.00,76.00,90,110,250000,10.0", "kitti,Structured,ssf,70.00,80.00,90,110,240000,10.0",
            }));
            var files = report.Write(runs);
            Assert.That(File.ReadAllText(files[2]), Does.StartWith("<svg").And.Contain("dtd ssf: 75.0%"));
        }
        finally
        {
            Directory.Delete(runs, true);
        }
    }

    [Test]
    public void ThePublishedMeansAreThePapers()
    {
        // SSF Table 4: mean 73.10; GPS Table 3: mean 75.18 (the mean over the 19 tasks).
        Assert.That(VtabReport.Published["SSF (paper)"].Average(), Is.EqualTo(73.10).Within(0.005));
        Assert.That(VtabReport.Published["GPS (paper)"].Average(), Is.EqualTo(75.18).Within(0.005));
    }
}
