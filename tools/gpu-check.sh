#!/usr/bin/env bash
# GPU check kit: runs the op conformance suite and the CUDA benchmarks on an NVIDIA GPU, from a self-contained build
# that needs no .NET SDK on the GPU machine.
#
#   tools/gpu-check.sh pack [DIR]      on a machine with the .NET SDK: publish the kit into DIR
#                                      (default artifacts/gpu-check): one self-contained `peft` and this script
#   DIR/gpu-check.sh [small|full]      on the GPU machine: print the device, driver and NVRTC version, run every op
#                                      on the GPU against double-precision references, then the benchmarks
#                                      (full: ViT-B/16 training sizes, the default; small: a quick run)
#
# The GPU machine needs the NVIDIA driver (libcuda.so.1), NVRTC (libnvrtc.so.13/.12/.11.2 with its builtins) and
# cuBLAS (libcublas.so.13/.12/.11), found on the loader path, in $CUDA_PATH/lib64, $CUDA_HOME/lib64 or
# /usr/local/cuda/lib64. Exit codes: 0 all cases passed; 1 a case failed; 3 no usable GPU (the reason is printed).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "${1:-}" = "pack" ]; then
  repo=$(cd "$here/.." && pwd)
  out=${2:-$repo/artifacts/gpu-check}
  rm -rf "$out"
  dotnet publish "$repo/src/Cli" -c Release -r linux-x64 --self-contained \
    -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:DebugType=none -p:GenerateDocumentationFile=false \
    -o "$out" >/dev/null
  cp "$here/gpu-check.sh" "$out/gpu-check.sh"
  echo "kit: $out ($(du -sm "$out" | cut -f1) MiB): copy the folder to the GPU machine and run ./gpu-check.sh there"
  exit 0
fi

size=${1:-full}
if [ -x "$here/peft" ]; then
  peft="$here/peft"                                   # inside a packed kit
elif [ -x "$here/../artifacts/gpu-check/peft" ]; then
  peft="$here/../artifacts/gpu-check/peft"            # run from the repository after `pack`
else
  echo "no kit found: run 'tools/gpu-check.sh pack' first (needs the .NET SDK)" >&2
  exit 1
fi

echo "== machine"
uname -srm
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi: not found"
fi
echo "== peft selftest --device cuda --bench --bench-size $size"
set +e
"$peft" selftest --device cuda --bench --bench-size "$size"
rc=$?
set -e
case $rc in
  0) echo "== result: every op passed on the GPU" ;;
  3) echo "== result: no GPU here; nothing was checked" ;;
  *) echo "== result: FAILED (exit $rc)" ;;
esac
exit $rc
