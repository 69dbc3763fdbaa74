global using Engine.Conformance;
global using NUnit.Framework;
global using NUnit.Framework.Legacy;
