using System.CommandLine;
using Engine.Cli;

var root = new RootCommand("peft: a native-kernel transformer engine for parameter-efficient fine-tuning of vision models.") { CommonOptions.Threads, CommonOptions.Verbose };
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(InferCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(SelftestCommand.Create());
root.Subcommands.Add(SelectCommand.Create());
root.Subcommands.Add(MergeCommand.Create());
root.Subcommands.Add(VtabCommand.Create());
root.Subcommands.Add(SyntheticCommand.Create());
try
{
    var parse = root.Parse(args);
    if (parse.Errors.Count > 0) return OptionRules.ReportErrors(parse);
    CommonOptions.ApplyGlobals(parse);
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or ArithmeticException
                           or Engine.Kernels.Cuda.CudaException or Engine.Kernels.Cuda.CudaCompileException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
catch (Exception e)
{
    Console.Error.WriteLine($"error: unexpected {e.GetType().Name} (please report it): {e.Message}");
    return 2;
}
