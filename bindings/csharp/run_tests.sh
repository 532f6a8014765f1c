#!/usr/bin/env bash
# Builds the C# binding and its tests with Mono's mcs and runs them against libds (found through
# the system's library path, or LD_LIBRARY_PATH). Prints "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
mcs -nologo -langversion:7.2 -warnaserror -target:library -out:build/Ds.dll -r:System.Core.dll src/Ds.cs
mcs -nologo -langversion:7.2 -out:build/Tests.exe -r:build/Ds.dll -r:System.Core.dll tests/Tests.cs
mcs -nologo -langversion:7.2 -out:build/Example.exe -r:build/Ds.dll -r:System.Core.dll example/Example.cs
cd build && mono Tests.exe
