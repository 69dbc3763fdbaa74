#!/usr/bin/env bash
# The emulated CUDA device's kernels under AddressSanitizer: a kernel that reads or writes outside the buffers it was
# given (which a GPU lets pass, reading or overwriting a neighbour, or faults on) stops the run with ASan's report,
# naming the kernel's file and line.
#
#   tools/asan-emulator.sh            every op case (peft selftest) in both thread orders, grids sized for 132 SMs
#   tools/asan-emulator.sh --tests    the same, then every emulated-cuda test (7.5 minutes in all on 2 vCPUs)
#
# Builds the library with PEFT_CUEMU_CXXFLAGS="-fsanitize=address ..." (its own cache key, so the ordinary build stays)
# and preloads g++'s libasan into dotnet. ASan sees whole buffers as the pool hands them out: sizes rounded up to 64
# bytes, and a view's neighbours inside its storage, go unseen. Exit 0 when clean; ASan's report and 1 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tests=0
case "${1:-}" in
  "") ;;
  --tests) tests=1 ;;
  *) echo "usage: tools/asan-emulator.sh [--tests]" >&2; exit 2 ;;
esac
command -v g++ >/dev/null || { echo "asan-emulator: needs g++ (apt-get install g++)" >&2; exit 2; }
libasan=$(g++ -print-file-name=libasan.so)
[ -f "$libasan" ] || { echo "asan-emulator: g++ has no libasan.so (apt-get install libasan8)" >&2; exit 2; }

export PEFT_CUEMU_CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -g"
# .NET handles SIGSEGV itself (null references) and keeps memory for the process's life; the emulator's fibers switch
# stacks, which ASan's fake stacks for use-after-return do not follow.
export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:detect_stack_use_after_return=0"

dotnet build "$repo/src/Cli" -c Release -v q -nologo >/dev/null
for order in ascending descending; do
  echo "== op cases under ASan, $order, 132 multiprocessors"
  LD_PRELOAD="$libasan" dotnet "$repo/src/Cli/bin/Release/net10.0/peft.dll" selftest --device emulated-cuda \
    --thread-order "$order" --multiprocessors 132 | grep -E "^[0-9]+ passed, [0-9]+ failed"
done
if [ "$tests" = 1 ]; then
  echo "== emulated-cuda tests under ASan"
  LD_PRELOAD="$libasan" dotnet test "$repo/tests/Tests.csproj" -c Release -v q --nologo \
    --filter "Name~emulated-cuda|FullyQualifiedName~ThreadOrder|FullyQualifiedName~Emulator|FullyQualifiedName~Cuda" | tail -n 1
fi
echo "asan-emulator: no access outside a buffer"
