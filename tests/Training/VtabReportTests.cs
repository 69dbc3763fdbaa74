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
        new RunConfig { Task = task, TaskFolder = "/data/" + task, Classes = 4, Model = "vit_base_patch16_224", Recipe = PeftRecipe.For(method, Engine.Data.VtabTasks.Find(task)?.Name) }
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
            Assert.That(md, Does.Contain("| method | params (M) | dtd | kitti | Natural | Structured | mean (tasks) | mean (groups) |"));
            // Two of VTAB's 19 tasks: no group mean and no mean (they would not compare with the papers').
            Assert.That(md, Does.Contain("| ssf | 0.25 | 75.0 | 80.0 | – | – | – | – |"), "best accuracies; means only over whole groups");
            Assert.That(md, Does.Contain("| ssf | 0.25 | 71.0 | 70.0 | – | – | – | – |"), "final accuracies in the second table");
            Assert.That(md, Does.Contain("| gps | 0.25 | 76.0 | – | – | – | – | – |"), "a missing run leaves its cell empty");
            Assert.That(md, Does.Contain("| SSF (paper) | – | 75.1 | 80.6 | – | – | – | – |"));
            Assert.That(md, Does.Contain("| GPS (paper) | – | 75.8 | 82.4 | – | – | – | – |").And.Contain("| LoRA (paper) | – | 69.8 | 81.4 | – | – | – | – |"));
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

    /// <summary>Group means and the mean appear once every VTAB-1k task of them has a result; a task outside VTAB-1k
    /// whose task.json names no group gets a column of its own and keeps the published rows.</summary>
    [Test]
    public void MeansNeedWholeGroupsAndACustomTaskHasItsOwnColumn()
    {
        string runs = Files.TempDir();
        try
        {
            var tasks = Engine.Data.VtabTasks.All.ToList();
            for (int i = 0; i < tasks.Count; i++) FakeRun(runs, tasks[i].Name, "ssf", 50, VtabReport.Published["SSF (paper)"][i], 200_000);
            FakeRun(runs, "my_task", "ssf", 40, 42, 200_000);
            var md = VtabReport.Collect(runs).Markdown();
            TestContext.Out.WriteLine(md);
            Assert.That(md, Does.Contain("| smallnorb_ele | my_task | Natural | Specialized | Structured | Other | mean (tasks) | mean (groups) |"));
            // Our best equals SSF's published numbers task by task, so our group means are the paper's: 81.6, 86.6, 59.0.
            // mean (groups) = (81.571 + 86.55 + 58.963 + 42.0) / 4.
            Assert.That(md, Does.Contain("| 37.9 | 42.0 | 81.6 | 86.6 | 59.0 | 42.0 | 71.5 | 67.3 |"), "group means over whole groups; the means over every task and over the groups");
            Assert.That(md, Does.Contain("| 37.9 | – | 81.6 | 86.6 | 59.0 | – | – | – |"), "the published rows beside a custom task");
            // The figure: well-formed SVG on white, a y-axis label, the groups named with their means, the published marks.
            var svg = VtabReport.Collect(runs).Svg();
            var doc = System.Xml.Linq.XDocument.Parse(svg);
            Assert.That(doc.Root!.Name.LocalName, Is.EqualTo("svg"));
            Assert.That(svg, Does.Contain("fill=\"white\"").And.Contain(">top-1 accuracy (%)</text>").And.Contain(">Natural</text>").And.Contain(">Other</text>")
                .And.Contain("<title>Natural mean, ssf: 81.6%</title>").And.Contain("<title>dtd SSF (paper): 75.1%</title>")
                .And.Not.Contain("<title>dtd GPS (paper)").And.Not.Contain("<title>my_task SSF"), "published marks only for the methods that ran, only over VTAB-1k tasks");
            FakeRun(runs, "dtd", "vpt", 30, 60, 460_800); // the method vpt has the published row "VPT-Deep (paper)"
            Assert.That(VtabReport.Collect(runs).Svg(), Does.Contain("<title>dtd VPT-Deep (paper): 65.8%</title>"));
            Directory.Delete(Path.Combine(runs, "dtd", "vpt"), true);
            // A VTAB group with one task missing has no mean.
            Directory.Delete(Path.Combine(runs, "dtd"), true);
            Assert.That(VtabReport.Collect(runs).Markdown(), Does.Contain("| – | 86.6 | 59.0 | 42.0 | – | – |"));
            Assert.That(VtabReport.Collect(runs).Svg(), Does.Not.Contain("Natural mean").And.Contain("Specialized mean, ssf: 86.6%"));
            // A custom task's task.json may name its group; a bad one is refused naming the file.
            Directory.CreateDirectory("/tmp/engine-report-task");
            File.WriteAllText("/tmp/engine-report-task/task.json", """{ "classes": 4, "group": "weird" }""");
            string dir = Path.Combine(runs, "other_task", "ssf");
            Directory.CreateDirectory(dir);
            new RunConfig { Task = "other_task", TaskFolder = "/tmp/engine-report-task", Classes = 4, Model = "m", Recipe = PeftRecipe.For("ssf") }.Save(Path.Combine(dir, "config.json"));
            File.WriteAllText(Path.Combine(dir, "result.json"), System.Text.Json.JsonSerializer.Serialize(new RunResult("other_task", "ssf", 1, 1, 1, 1, 1, 1), RunConfig.Json));
            Assert.That(Assert.Throws<Engine.IO.InvalidInputException>(() => VtabReport.Collect(runs))!.Message, Does.Contain("task.json").And.Contain("weird"));
        }
        finally
        {
            Directory.Delete(runs, true);
            if (Directory.Exists("/tmp/engine-report-task")) Directory.Delete("/tmp/engine-report-task", true);
        }
    }

    [Test]
    public void ThePublishedMeansAreThePapers()
    {
        // SSF Table 4: mean 73.10; GPS Table 3: mean 75.18, and its baselines' "Mean Acc." (the mean over the 19 tasks).
        var means = new Dictionary<string, double>
        {
            ["SSF (paper)"] = 73.10, ["GPS (paper)"] = 75.18, ["Full (paper)"] = 65.57, ["Linear (paper)"] = 53.00, ["Bias (paper)"] = 62.05,
            ["VPT-Deep (paper)"] = 69.43, ["Adapter (paper)"] = 55.82, ["LoRA (paper)"] = 72.63,
        };
        Assert.That(VtabReport.Published.Keys, Is.EquivalentTo(means.Keys));
        foreach (var (row, mean) in means) Assert.That(VtabReport.Published[row].Average(), Is.EqualTo(mean).Within(0.005), row);
    }
}
