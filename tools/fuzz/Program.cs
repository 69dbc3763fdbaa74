using Engine;
using Engine.Checkpoints;
using Engine.Data;
using Engine.Imaging;
using Engine.IO;
using Engine.Models;
using Engine.Models.Training;
using SharpFuzz;

// One AFL++ target per input format. Each input is read the way the program reads that format; the contract
// exception (InvalidInputException) is the expected way to refuse it, anything else is a finding (a crash to AFL).
var targets = new Dictionary<string, Action<string>>
{
    ["safetensors"] = ReadCheckpoint, ["npz"] = ReadCheckpoint, ["pth"] = ReadCheckpoint,
    ["npy"] = path => Npy.Read(path),
    ["png"] = path => ImageFile.Read(path), ["jpeg"] = path => ImageFile.Read(path),
    ["config"] = path => ImageModels.Create(Device.Cpu, path, 2).Dispose(),
    ["runconfig"] = path => RunConfig.Load(path),
    ["list"] = ReadList, ["pickle"] = ReadPickle, ["cache"] = ReadCache,
    ["state"] = path => FineTuneRun.ReadState(path, Path.GetDirectoryName(path)!, 100),
};
if (args.Length != 1 || !targets.TryGetValue(args[0], out var read))
{
    Console.Error.WriteLine($"usage: peft-fuzz TARGET (one of {string.Join(", ", targets.Keys)}), under afl-fuzz (tools/fuzz.sh)");
    return 2;
}
string dir = Directory.CreateTempSubdirectory("peft-fuzz-").FullName, file = Path.Combine(dir, "input");
Fuzzer.Run(stream =>
{
    using (var f = File.Create(file)) stream.CopyTo(f);
    try
    {
        read(file);
    }
    catch (InvalidInputException)
    {
        // refused cleanly: the contract
    }
});
return 0;

static void ReadCheckpoint(string path)
{
    using var checkpoint = Checkpoint.Open(path);
    foreach (var e in checkpoint.Entries) e.Read();
}

// A VTAB list file in a task folder holding two small images.
static void ReadList(string path)
{
    string task = Path.Combine(Path.GetDirectoryName(path)!, "task");
    if (!Directory.Exists(task))
    {
        Directory.CreateDirectory(Path.Combine(task, "images"));
        var png = Convert.FromBase64String("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC");
        File.WriteAllBytes(Path.Combine(task, "images", "0.png"), png);
        File.WriteAllBytes(Path.Combine(task, "images", "1.png"), png);
    }
    File.Copy(path, Path.Combine(task, "fuzz.txt"), overwrite: true);
    ImageList.Read(task, "fuzz", 2);
}

// A pickle as the data.pkl of an otherwise valid torch.save archive (one float storage, key "0", of 4 elements).
static void ReadPickle(string path)
{
    string pth = path + ".pth";
    using (var zip = System.IO.Compression.ZipFile.Open(pth, System.IO.Compression.ZipArchiveMode.Create))
    {
        using (var s = zip.CreateEntry("archive/data.pkl").Open()) s.Write(File.ReadAllBytes(path));
        using (var s = zip.CreateEntry("archive/data/0").Open()) s.Write(new byte[16]);
    }
    try
    {
        ReadCheckpoint(pth);
    }
    finally
    {
        File.Delete(pth);
    }
}

// An image cache file for a one-image list.
static void ReadCache(string path)
{
    string task = Path.Combine(Path.GetDirectoryName(path)!, "cache-task"), cacheDir = Path.Combine(task, "cache");
    if (!Directory.Exists(task))
    {
        Directory.CreateDirectory(Path.Combine(task, "images"));
        File.WriteAllBytes(Path.Combine(task, "images", "0.png"),
            Convert.FromBase64String("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"));
        File.WriteAllLines(Path.Combine(task, "train.txt"), ["images/0.png 0"]);
    }
    var list = ImageList.Read(task, "train", 2);
    string cachePath;
    using (var built = ImageCache.Open(list, 2, cacheDir)) cachePath = built.CachePath;
    File.Copy(path, cachePath, overwrite: true);
    ImageCache.Open(list, 2, cacheDir).Dispose();
}

