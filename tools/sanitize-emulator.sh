#!/usr/bin/env bash
# The emulated CUDA device's kernels under a g++ sanitizer:
#   address    (default) a kernel that reads or writes outside the buffers it was given, which a GPU lets pass
#              (reading or overwriting a neighbour) or faults on;
#   undefined  undefined behaviour in the kernels and the emulator: misaligned loads, signed overflow, bad shifts;
#   contract   not a sanitizer: every a·b + c fused into one FMA where g++ can (-mfma -ffp-contract=fast), as NVRTC
#              does by default (--fmad=true), so a check that holds two kernels to the same bits fails here when it
#              depends on the compiler not fusing (CUDA's __fmul_rn keeps a product apart on both).
# address and undefined stop the run with the sanitizer's report, naming the file and line.
#
#   tools/sanitize-emulator.sh [address|undefined|contract]           every op case (peft selftest) in both thread
#                                                                     orders, grids sized for 132 multiprocessors
#   tools/sanitize-emulator.sh [address|undefined|contract] --tests   the same, then every emulated-cuda test
#
# Builds the library with PEFT_CUEMU_CXXFLAGS="-fsanitize=..." (its own cache key, so the ordinary build stays) and,
# for address, preloads g++'s libasan into dotnet. ASan sees whole buffers as the pool hands them out: sizes rounded
# up to 64 bytes, and a view's neighbours inside its storage, go unseen. Exit 0 when clean; the report and 1 otherwise.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: tools/sanitize-emulator.sh [address|undefined|contract] [--tests]"
sanitizer=address tests=0
for arg in "$@"; do
  case "$arg" in
    address|undefined|contract) sanitizer=$arg ;;
    --tests) tests=1 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
command -v g++ >/dev/null || { echo "sanitize-emulator: needs g++ (apt-get install g++)" >&2; exit 2; }

preload=""
if [ "$sanitizer" = address ]; then
  preload=$(g++ -print-file-name=libasan.so)
  [ -f "$preload" ] || { echo "sanitize-emulator: g++ has no libasan.so (apt-get install libasan8)" >&2; exit 2; }
  export PEFT_CUEMU_CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -g"
  # .NET handles SIGSEGV itself (null references) and keeps memory for the process's life; the emulator's fibers
  # switch stacks, which ASan's fake stacks for use-after-return do not follow.
  export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:detect_stack_use_after_return=0"
elif [ "$sanitizer" = undefined ]; then
  export PEFT_CUEMU_CXXFLAGS="-fsanitize=undefined -fno-sanitize-recover=undefined -g"
else
  grep -qw fma /proc/cpuinfo || { echo "sanitize-emulator: contract needs a CPU with FMA" >&2; exit 2; }
  export PEFT_CUEMU_CXXFLAGS="-mfma -ffp-contract=fast"
fi
run() { if [ -n "$preload" ]; then LD_PRELOAD="$preload" "$@"; else "$@"; fi; }

dotnet build "$repo/src/Cli" -c Release -v q -nologo >/dev/null
for order in ascending descending; do
  echo "== op cases under $sanitizer, $order, 132 multiprocessors"
  run dotnet "$repo/src/Cli/bin/Release/net10.0/peft.dll" selftest --device emulated-cuda \
    --thread-order "$order" --multiprocessors 132 | grep -E "FAIL|^[0-9]+ passed, [0-9]+ failed"
done
if [ "$tests" = 1 ]; then
  echo "== emulated-cuda tests under $sanitizer"
  run dotnet test "$repo/tests/Tests.csproj" -c Release -v q --nologo \
    --filter "Name~emulated-cuda|FullyQualifiedName~ThreadOrder|FullyQualifiedName~Emulator|FullyQualifiedName~Cuda" | tail -n 1
fi
echo "sanitize-emulator: $sanitizer: clean"
