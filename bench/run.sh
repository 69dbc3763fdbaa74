#!/usr/bin/env bash
# Runs the CPU benchmarks and prints the README tables at the end, or the CUDA device benchmarks.
#   bash bench/run.sh                      # everything
#   bash bench/run.sh --filter '*Gemm*'    # BenchmarkDotNet arguments pass through
#   bash bench/run.sh cuda                 # the CUDA device benchmarks (needs a GPU; exit 3 with the reason otherwise)
#   bash bench/run.sh cuda --emulated      # the same code on the emulated device, small sizes
#   bash bench/run.sh peft [--model convnext_base] [--batch 8] [--rounds 5] [--methods full,ssf,...] [--alone] [--unfused-attention]
#                                          # a training step per PEFT method vs full (default ViT-B/16)
#   bash bench/run.sh peers [--only gemm|backward|forward] [--models ...] [--batches 1,8] [--rounds 5] [--unfused-attention] [--cold-weights]
#                                          # GEMM vs OpenBLAS and ORT's MatMul, forward vs ONNX Runtime
#   bash bench/run.sh fused [--rounds 9]       # fused ops vs their unfused paths (attention, Linear+GELU), alternating;
#                                              # ViT-B/16 forward: last block on the class row vs every token
#   bash bench/run.sh --no-build ...           # any of these as last built (no build check first: about 10 s less)
# OpenBLAS 0.3.21 misdetects AVX-512 Zen parts as Haswell; on CPUs with avx512f we force its SkylakeX kernels, the
# fastest it has there (even over an OPENBLAS_CORETYPE from the environment: the yardstick is OpenBLAS at its best).
# The variable must be set before the library loads, which .NET cannot do from inside the process.
set -euo pipefail
cd "$(dirname "$0")/.."
build=()
if [ "${1:-}" = "--no-build" ]; then
  build=(--no-build)
  shift
fi
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<'USAGE'
bash bench/run.sh [BenchmarkDotNet arguments]   the CPU benchmarks (GEMM vs OpenBLAS, memory-bound kernels vs memcpy,
                                                ViT/Swin/ConvNeXt forward), then their tables; e.g. --filter '*Gemm*'
bash bench/run.sh --list                        the CPU benchmarks' names, for --filter
bash bench/run.sh cuda [--small | --emulated]   the device benchmarks on a GPU (or on the emulated device)
bash bench/run.sh peft [--model M] [--batch 8] [--rounds 5] [--methods full,ssf,...] [--alone] [--unfused-attention]
                                                a training step per PEFT method next to full fine-tuning
                                                (--alone: only the listed methods, for their peak RSS;
                                                --unfused-attention: the unfused reference attention, to compare)
bash bench/run.sh peers [--only gemm|backward|forward] [--models M,...] [--batches 1,8] [--rounds 5] [--unfused-attention] [--cold-weights]
                                                the engine beside its peers, alternating: GEMM vs OpenBLAS and
                                                ORT's MatMul (and a register-only FMA loop, the core's ceiling)
                                                at ViT-B/16's shapes for each of --batches (M = 197
                                                per image) and Swin/ConvNeXt stages 3-4 at batch 1
                                                (1 and 2 threads; --cold-weights: each product reads the next of
                                                many copies of W, so W comes from memory), the backward's dX and dW
                                                products of ViT-B/16 at batch 8 vs OpenBLAS (dX also with W packed
                                                once; --only backward: this table alone), eval forward vs its ONNX
                                                export in ONNX Runtime (size, logit difference, time, kernel split)
bash bench/run.sh fused [--rounds 9]            fused ops vs their unfused paths on the CPU (attention fwd+bwd, Linear+GELU), and
                                                ViT-B/16's eval forward with its last block on the class row vs every token
bash bench/run.sh --no-build ...                any of the above as last built (dotnet's build check skipped)
One kernel at any shape on any device: dotnet run --project src/Cli -c Release -- bench --op gelu --shape 1576x3072
USAGE
  exit 0
fi
[ "${1:-}" = "--list" ] && set -- --list flat
if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--filter '*')
dotnet run "${build[@]}" --project bench -c Release -- "${args[@]}"
