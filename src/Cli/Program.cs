using System.CommandLine;
using Engine.Cli;

var root = new RootCommand("peft: a native-kernel transformer engine for parameter-efficient fine-tuning of vision models.");
root.Subcommands.Add(DemoCommand.Create());
try
{
    return root.Parse(args).Invoke();
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or ArithmeticException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
