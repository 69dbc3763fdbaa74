namespace Engine.IO;

/// <summary>
/// A file or folder from outside the program does not hold what it should. The one exception every parser and loader
/// throws for bad input (checkpoints, images, VTAB lists, caches, configs, run folders); its message starts with the
/// path and says what is wrong and where (tensor, offset, field). The CLI prints it as one line and exits 1. (An
/// <see cref="IOException"/>: the BCL's <see cref="InvalidDataException"/> is sealed.)
/// </summary>
public sealed class InvalidInputException : IOException
{
    /// <summary>The input <paramref name="path"/> is wrong as <paramref name="problem"/> says.</summary>
    public InvalidInputException(string path, string problem, Exception? inner = null) : base($"{path}: {problem}", inner) => Path = path;

    /// <summary>The file or folder at fault.</summary>
    public string Path { get; }
}
