namespace Engine.Data;

/// <summary>The three VTAB-1k task groups.</summary>
public enum VtabGroup
{
    /// <summary>Natural images (CIFAR-100, Caltech101, ...).</summary>
    Natural,
    /// <summary>Specialised equipment (remote sensing, medical).</summary>
    Specialized,
    /// <summary>Structured scene understanding (counting, distance, orientation).</summary>
    Structured,
    /// <summary>A task outside VTAB-1k whose <c>task.json</c> names no group: reported in a column of its own.</summary>
    Other,
}

/// <summary>A VTAB-1k task: its folder name (NOAH's extractor), class count, group and test-split size.</summary>
public sealed record VtabTask(string Name, int Classes, VtabGroup Group, int TestImages);

/// <summary>The 19 VTAB-1k tasks in the papers' column order (Natural, Specialized, Structured).</summary>
public static class VtabTasks
{
    /// <summary>Every task, in the papers' column order.</summary>
    public static IReadOnlyList<VtabTask> All { get; } =
    [
        new("cifar", 100, VtabGroup.Natural, 10_000),
        new("caltech101", 102, VtabGroup.Natural, 6_084),
        new("dtd", 47, VtabGroup.Natural, 1_880),
        new("oxford_flowers102", 102, VtabGroup.Natural, 6_149),
        new("oxford_iiit_pet", 37, VtabGroup.Natural, 3_669),
        new("svhn", 10, VtabGroup.Natural, 26_032),
        new("sun397", 397, VtabGroup.Natural, 21_750),
        new("patch_camelyon", 2, VtabGroup.Specialized, 32_768),
        new("eurosat", 10, VtabGroup.Specialized, 5_400),
        new("resisc45", 45, VtabGroup.Specialized, 6_300),
        new("diabetic_retinopathy", 5, VtabGroup.Specialized, 42_670),
        new("clevr_count", 8, VtabGroup.Structured, 15_000),
        new("clevr_dist", 6, VtabGroup.Structured, 15_000),
        new("dmlab", 6, VtabGroup.Structured, 22_735),
        new("kitti", 4, VtabGroup.Structured, 711),
        new("dsprites_loc", 16, VtabGroup.Structured, 73_728),
        new("dsprites_ori", 16, VtabGroup.Structured, 73_728),
        new("smallnorb_azi", 18, VtabGroup.Structured, 12_150),
        new("smallnorb_ele", 9, VtabGroup.Structured, 12_150),
    ];

    /// <summary>The task named <paramref name="name"/>, or null when it is not a VTAB-1k task.</summary>
    public static VtabTask? Find(string name) => All.FirstOrDefault(t => t.Name == name);

    /// <summary>The list-file splits of a task folder.</summary>
    public static IReadOnlyList<string> Splits { get; } = ["train800", "val200", "train800val200", "test"];
}
