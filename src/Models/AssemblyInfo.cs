using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Engine.Tests")]
[assembly: InternalsVisibleTo("peft-fuzz")]
[assembly: InternalsVisibleTo("Engine.Bench")]
