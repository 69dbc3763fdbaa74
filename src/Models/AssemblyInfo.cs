using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Engine.Tests")]
