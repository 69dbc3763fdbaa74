using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Engine.Cli;

/// <summary>
/// The one validation layer of the command line: range rules attached to numeric options (checked while parsing, so a
/// bad value stops the command before anything is read or written), and parse errors turned into one line each that
/// names the option, followed by where the help is.
/// </summary>
public static partial class OptionRules
{
    /// <summary>Adds a rule: when the option is given, <paramref name="ok"/> must hold for its value.</summary>
    public static Option<T> Require<T>(this Option<T> option, Func<double, bool> ok, string rule)
    {
        option.Validators.Add(result =>
        {
            if (result.Implicit || result.Tokens.Count == 0) return; // the default, not a value the user gave
            object? value;
            try { value = result.GetValueOrDefault<T>(); }
            catch (InvalidOperationException) { return; } // unparsable: the parser reports it
            if (value is null) return;
            double v = Convert.ToDouble(value, CultureInfo.InvariantCulture);
            if (!ok(v)) result.AddError($"{option.Name} {rule} (got {result.Tokens[^1].Value})");
        });
        return option;
    }

    /// <summary>Values given per method (METHOD=VALUE, or one plain VALUE when <paramref name="allowPlain"/>), checked
    /// while parsing by <see cref="CommonOptions.ParsePerMethod"/>.</summary>
    public static Option<string[]> PerMethod(this Option<string[]> option, Func<double, bool> ok, string rule, bool allowPlain, string example)
    {
        option.Validators.Add(result =>
        {
            try { CommonOptions.ParsePerMethod(option.Name, result.GetValueOrDefault<string[]>(), ok, rule, allowPlain, example); }
            catch (ArgumentException e) { result.AddError(e.Message); }
        });
        return option;
    }

    /// <summary>An integer of at least <paramref name="min"/>.</summary>
    public static Option<T> AtLeast<T>(this Option<T> option, int min) => option.Require(v => v >= min, $"must be at least {min}");

    /// <summary>A finite number above 0.</summary>
    public static Option<T> Positive<T>(this Option<T> option) => option.Require(v => double.IsFinite(v) && v > 0, "must be a finite number above 0");

    /// <summary>A finite number of at least 0.</summary>
    public static Option<T> NonNegative<T>(this Option<T> option) => option.Require(v => double.IsFinite(v) && v >= 0, "must be a finite number ≥ 0");

    /// <summary>A probability-like value in [0, 1).</summary>
    public static Option<T> Fraction<T>(this Option<T> option) => option.Require(v => v is >= 0 and < 1, "must lie in [0, 1)");

    /// <summary>Prints the parse errors of <paramref name="parse"/> one line each, then where the command's help is;
    /// returns the exit code (1).</summary>
    public static int ReportErrors(ParseResult parse)
    {
        foreach (var error in parse.Errors)
        {
            string message = Plain(error.Message);
            var option = error.SymbolResult switch
            {
                OptionResult r => r.Option,
                ArgumentResult { Parent: OptionResult r } => r.Option,
                _ => null,
            };
            if (option != null && !message.Contains(option.Name, StringComparison.Ordinal)) message = $"{option.Name}: {message}";
            Console.Error.WriteLine($"error: {message}");
        }
        var names = new List<string>();
        for (SymbolResult? s = parse.CommandResult; s != null; s = s.Parent)
            if (s is CommandResult c) names.Insert(0, c.Command is RootCommand ? "peft" : c.Command.Name);
        Console.Error.WriteLine($"see '{string.Join(' ', names)} --help'");
        return 1;
    }

    // System.CommandLine's messages on one line, with .NET type names in words.
    static string Plain(string message)
    {
        message = TypeName().Replace(message, m => m.Groups[1].Value switch
        {
            "Int32" or "Int64" => "an integer",
            "UInt64" or "UInt32" => "a non-negative integer",
            "Single" or "Double" => "a number",
            "Boolean" => "true or false",
            var other => other,
        });
        var lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 1 ? lines[0] : lines[0] + " " + string.Join(", ", lines[1..]);
    }

    [GeneratedRegex(@"(?:expected type )?'System\.(?:Nullable`1\[System\.)?(\w+)\]?'")]
    private static partial Regex TypeName();
}
