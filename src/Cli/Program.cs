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
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ExportCommand.Create());
root.Subcommands.Add(KernelsCommand.Create());
try
{
    var parse = root.Parse(args);
    if (parse.Errors.Count > 0) return OptionRules.ReportErrors(parse);
    CommonOptions.ApplyGlobals(parse);
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e)
{
    // Parallel work and static initialisers wrap the real failure; a missing or broken native library is a set-up
    // problem with a clear message, not a bug.
    var cause = Cause(e);
    if (cause is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or ArithmeticException
        or NotSupportedException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException
        or Engine.Kernels.Cuda.CudaException or Engine.Kernels.Cuda.CudaCompileException or Engine.Kernels.DeviceOutOfMemoryException)
    {
        Console.Error.WriteLine($"error: {cause.Message}");
        return 1;
    }
    Console.Error.WriteLine($"error: unexpected {cause.GetType().Name} (please report it): {cause.Message}");
    return 2;
}

static Exception Cause(Exception e) => e switch
{
    AggregateException { InnerExceptions.Count: > 0 } a => Cause(a.InnerExceptions[0]),
    TypeInitializationException { InnerException: { } inner } => Cause(inner),
    System.Reflection.TargetInvocationException { InnerException: { } inner } => Cause(inner),
    _ => e,
};
