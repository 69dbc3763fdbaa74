#!/usr/bin/env bash
# GPU check kit: one short, self-contained run on an NVIDIA GPU machine that needs no .NET SDK there.
#
#   tools/gpu-check.sh pack [DIR]      on a machine with the .NET SDK: publish the kit into DIR (default
#                                      artifacts/gpu-check): one self-contained `peft`, this script and the PyTorch peer
#                                      (bench/peers/timm_step.py); it must stay within 56 MiB
#   DIR/gpu-check.sh [small|full] [--out DIR] [--batch "32 128"] [--repeats N] [--methods "full ssf gps"]
#                    [--precision "tf32 bf16"]
#                                      on the GPU machine:
#                                      1. the machine: GPU, driver, NVRTC and cuBLAS libraries, Python/PyTorch/timm
#                                      2. every op case on the GPU (fp32, and the bf16/fp16/tf32 GEMM and rounding cases)
#                                         against double-precision references, then the kernel benchmarks (memory-bound
#                                         kernels as a share of the device's copy bandwidth; GEMM fp32, TF32, bf16, fp16)
#                                      3. a ViT-B/16 training step per method (full linear bias ssf sct gps), precision
#                                         (fp32 tf32 bf16) and batch: images/s and peak device memory, the attention
#                                         path each shape measured faster (fused on tensor cores or unfused)
#                                      4. the PyTorch + timm peer of the same steps (fp32 tf32 bf16, fp16 AMP), then one
#                                         table of our images/s over theirs (skipped, with the reason, without Python,
#                                         PyTorch or timm)
#                                      5. the bf16 steps of full, ssf and gps again from CUDA graphs, again on the
#                                         other attention path, and again with a bias pass after each GEMM instead of
#                                         cuBLASLt's epilogue; one profiled step of each per batch (kernels by their
#                                         share of it); then the table again with columns for the graphed and other-attention
#                                         steps. Everything before step 5 is on disk if a time limit cuts it short.
#                                      6. ptxas's report on every kernel from this machine's NVRTC (peft kernels):
#                                         registers and spills, to set beside the build machine's NVRTC 11.8
#                                      --out DIR collects every log, the JSON rows and table.md in one folder.
#                                      Each section's header says the seconds since the start ("== [95s] ..."). When
#                                      the tensor-core attention's case or LinearInSixteenBits fails on the GPU, the
#                                      steps run without that path (--attention unfused, --linear-epilogues off), so
#                                      one broken kernel cannot take every step's figures with it. A kernel that
#                                      faults loses the GPU context for the rest of its process: selftest then runs
#                                      again in a new process without the case that met it (--skip), and the steps of
#                                      the other methods run again without the method that met it.
#                                      small: a quick run (small benchmark sizes, batch 32, fewer repeats).
#                                      --methods, --precision: only these steps (and peer rows), to fit a short run.
#
# The GPU machine needs the NVIDIA driver (libcuda.so.1), NVRTC (libnvrtc.so.13/.12/.11.2 with its builtins) and
# cuBLAS (libcublas.so.13/.12/.11), found on the loader path, in $CUDA_PATH/lib64, $CUDA_HOME/lib64 or
# /usr/local/cuda/lib64. Exit codes: 0 all cases passed; 1 a case or a step failed; 3 no usable GPU (the reason is
# printed; nothing else runs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
limit_mib=56

if [ "${1:-}" = "pack" ]; then
  repo=$(cd "$here/.." && pwd)
  out=${2:-$repo/artifacts/gpu-check}
  rm -rf "$out"
  dotnet publish "$repo/src/Cli" -c Release -r linux-x64 --self-contained \
    -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:DebugType=none -p:GenerateDocumentationFile=false \
    -o "$out" >/dev/null
  cp "$here/gpu-check.sh" "$out/gpu-check.sh"
  cp "$repo/bench/peers/timm_step.py" "$out/timm_step.py"
  mib=$(du -sm "$out" | cut -f1)
  if [ "$mib" -gt "$limit_mib" ]; then
    echo "kit: $out is $mib MiB, over the $limit_mib MiB that may travel to the GPU machine" >&2
    exit 1
  fi
  echo "kit: $out ($mib MiB of at most $limit_mib): copy the folder to the GPU machine and run ./gpu-check.sh there"
  exit 0
fi

size=full out="" batches="" repeats="" methods="full linear bias ssf sct gps" precisions="fp32 tf32 bf16"
while [ $# -gt 0 ]; do
  case "$1" in
    small|full) size=$1 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --batch) batches=${2:?--batch needs sizes, e.g. \"32 128\"}; shift ;;
    --repeats) repeats=${2:?--repeats needs a count}; shift ;;
    --methods) methods=${2:?--methods needs names, e.g. \"full ssf gps\"}; shift ;;
    --precision) precisions=${2:?--precision needs formats, e.g. \"tf32 bf16\"}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (small|full, --out DIR, --batch \"32 128\", --repeats N, --methods \"...\", --precision \"...\")" >&2; exit 1 ;;
  esac
  shift
done
[ -z "$batches" ] && { [ "$size" = small ] && batches="32" || batches="32 128"; }
[ -z "$repeats" ] && { [ "$size" = small ] && repeats=3 || repeats=5; }
if [ -n "$out" ]; then
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
else
  out=$(mktemp -d)
fi

if [ -x "$here/peft" ]; then
  peft="$here/peft"                                   # inside a packed kit
  peer="$here/timm_step.py"
elif [ -x "$here/../artifacts/gpu-check/peft" ]; then
  peft="$here/../artifacts/gpu-check/peft"            # run from the repository after `pack`
  peer="$here/../bench/peers/timm_step.py"
else
  echo "no kit found: run 'tools/gpu-check.sh pack' first (needs the .NET SDK)" >&2
  exit 1
fi

# NVRTC and cuBLAS may live outside the loader's path: in a CUDA toolkit, or only in the NVIDIA wheels that PyTorch
# installs. Every folder that holds one is appended to LD_LIBRARY_PATH (the loader's own choice still comes first).
cuda_dirs=""
for pattern in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  for dir in $pattern; do [ -d "$dir" ] && cuda_dirs="$cuda_dirs $dir"; done
done
if command -v python3 >/dev/null 2>&1; then
  wheels=$(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d) for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true)
  for dir in $wheels; do [ -d "$dir/lib" ] && cuda_dirs="$cuda_dirs $dir/lib"; done
fi
found_dirs=""
for dir in $cuda_dirs; do
  if compgen -G "$dir/libnvrtc.so.*" >/dev/null || compgen -G "$dir/libcublas.so.*" >/dev/null; then
    found_dirs="$found_dirs $dir"
    LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir"
  fi
done
export LD_LIBRARY_PATH

{
  echo "== machine"
  uname -srm
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
  else
    echo "nvidia-smi: not found"
  fi
  echo "NVRTC, cuBLAS on the loader's path: $( (ldconfig -p 2>/dev/null | grep -oE 'lib(nvrtc|cublas)\.so\.[0-9.]+' | sort -u | tr '\n' ' ') || true)"
  for dir in $found_dirs; do
    echo "  and in $dir: $(cd "$dir" && ls libnvrtc.so.* libcublas.so.* 2>/dev/null | tr '\n' ' ')"
  done
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import torch, timm; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuBLAS via torch; timm", timm.__version__)' 2>/dev/null \
      || echo "python3: $(python3 --version 2>&1), no PyTorch/timm"
  else
    echo "python3: not found"
  fi
} 2>&1 | tee "$out/machine.txt"

# A section's header, with the seconds since the kit started.
section() { printf '== [%ds] %s\n' "$SECONDS" "$*"; }

# A case whose kernel faults loses the GPU context, and no case after it can run in that process: selftest then says
# "context lost in case NAME", and runs again in a new process without the cases that did (at most 4 times).
section "peft selftest --device cuda --bench --bench-size $size" | tee "$out/selftest.log"
attempt_log=$(mktemp)
skip="" rc=0
for attempt in 1 2 3 4 5; do
  set +e
  "$peft" selftest --device cuda --bench --bench-size "$size" ${skip:+--skip "$skip"} 2>&1 | tee "$attempt_log" | tee -a "$out/selftest.log"
  code=${PIPESTATUS[0]}
  set -e
  [ "$code" -eq 3 ] && { rm -f "$attempt_log"; echo "== result: no GPU here; nothing was checked (the reason is above)"; exit 3; }
  [ "$code" -ne 0 ] && rc=$code
  lost=$(sed -n 's/^context lost in case \([A-Za-z0-9]*\).*/\1/p' "$attempt_log" | tail -1)
  [ -z "$lost" ] && break
  skip="${skip:+$skip,}$lost"
  if [ "$attempt" -eq 5 ]; then
    echo "== selftest: $lost lost the GPU context too; no more reruns (five cases' kernels faulted)"
    break
  fi
  section "$lost lost the GPU context: selftest again in a new process without it (--skip $skip)" | tee -a "$out/selftest.log"
done
rm -f "$attempt_log"
case $rc in
  0) echo "== selftest: every op passed on the GPU" ;;
  *) echo "== selftest: FAILED (exit $rc${skip:+; these cases lost the GPU context: $skip})" ;;
esac

# A path whose case failed on this GPU is left out of the steps: a kernel that faults would end each step run.
step_flags=()
fused_ok=1 epilogues_ok=1
if grep -qE '^  FusedAttentionHeadDim64 +FAIL' "$out/selftest.log"; then
  fused_ok=0; step_flags+=(--attention unfused)
  echo "== FusedAttentionHeadDim64 failed on this GPU: every step runs the unfused attention (--attention unfused)"
fi
if grep -qE '^  LinearInSixteenBits +FAIL' "$out/selftest.log"; then
  epilogues_ok=0; step_flags+=(--linear-epilogues off)
  echo "== LinearInSixteenBits failed on this GPU: every step runs a bias pass after each GEMM (--linear-epilogues off)"
fi

# run_steps WHAT JSON "METHODS" ARGS...: one `peft bench --train-step` run of ViT-B/16 on the GPU for these methods
# with these arguments and the step flags, its output appended to steps.log and its rows to JSON (none when JSON is
# ""); a failure is said as "== WHAT: FAILED (exit N)" and fails the kit, and the next run goes on. A method whose
# step lost the GPU context ("context lost in method M": a kernel faulted) ends that process: the other methods run
# again in a new one (the rows they already ran are timed again; the tables take the later ones), and the later runs
# leave that method out.
lost_methods=""
run_steps() {
  local what=$1 json=$2 methods="" code lost attempt log m left_out=""
  for m in $3; do
    if [[ " $lost_methods " == *" $m "* ]]; then left_out="$left_out $m"; else methods="$methods$m "; fi
  done
  shift 3
  [ -n "$json" ] && : > "$json"
  [ -n "$left_out" ] && echo "== $what: left out, as they lost the GPU context before:$left_out" | tee -a "$out/steps.log"
  [ -z "$methods" ] && return 0
  log=$(mktemp)
  for attempt in 1 2 3; do
    set +e
    # shellcheck disable=SC2086
    "$peft" bench --train-step --device cuda --model vit_base_patch16_224 --methods $methods ${json:+--json "$json.part"} "$@" \
      ${step_flags[@]+"${step_flags[@]}"} 2>&1 | tee "$log" | tee -a "$out/steps.log"
    code=${PIPESTATUS[0]}
    set -e
    if [ -n "$json" ] && [ -f "$json.part" ]; then cat "$json.part" >> "$json"; rm -f "$json.part"; fi
    [ "$code" -eq 0 ] && break
    echo "== $what: FAILED (exit $code)"
    rc=1
    lost=$(sed -n 's/^context lost in method \([a-z0-9]*\).*/\1/p' "$log" | tail -1)
    [ -n "$lost" ] && lost_methods="$lost_methods $lost"
    methods=$(for m in $methods; do if [ "$m" != "$lost" ]; then printf '%s ' "$m"; fi; done)
    if [ -z "$lost" ] || [ -z "$methods" ] || [ "$attempt" -eq 3 ]; then break; fi
    section "$lost lost the GPU context in the $what: the other methods again in a new process (--methods ${methods% })" | tee -a "$out/steps.log"
  done
  rm -f "$log"
}

section "training steps: peft bench --train-step --batch $batches ($methods × $precisions) ${step_flags[*]+${step_flags[*]}}" | tee "$out/steps.log"
# shellcheck disable=SC2086
run_steps "training steps" "$out/ours.json" "$methods" --batch $batches --precision $precisions --repeats "$repeats"

# The peer runs right after our main steps, so a run cut short later still leaves both sides and the table; the table
# is made again at the end with the columns of the runs below.
section "the PyTorch + timm peer (python3 timm_step.py)" | tee "$out/peer.log"
peer_rc=4
if ! command -v python3 >/dev/null 2>&1; then
  echo "== peer: skipped: python3 not found" | tee -a "$out/peer.log"
else
  set +e
  peer_methods=$(for m in $methods; do if [ "$m" != sct ]; then printf '%s ' "$m"; fi; done) # the peer has no SCT
  # shellcheck disable=SC2086
  python3 "$peer" --model vit_base_patch16_224 --batch $batches --methods $peer_methods --precision $precisions fp16 \
    --repeats "$repeats" --json "$out/peer.json" --ours "$out/ours.json" 2>&1 | tee -a "$out/peer.log"
  peer_rc=${PIPESTATUS[0]}
  set -e
  case $peer_rc in
    0) sed -n '/^The engine over/,$p' "$out/peer.log" > "$out/table.md" ;;
    4) echo "== peer: skipped (PyTorch or timm missing; the reason is above)" ;;
    *) echo "== peer: FAILED (exit $peer_rc)" ;;
  esac
fi

graph_methods=$(for m in full ssf gps; do case " $methods " in *" $m "*) printf '%s ' "$m" ;; esac; done)
graph_methods=${graph_methods:-full}
section "the same steps replayed from CUDA graphs: peft bench --train-step --cuda-graph ($graph_methods× bf16)" | tee -a "$out/steps.log"
# shellcheck disable=SC2086
run_steps "CUDA graph steps" "$out/ours-graph.json" "$graph_methods" --cuda-graph --batch $batches --precision bf16 --repeats "$repeats"

# The default steps time both attention paths per shape on their first step and keep the faster (peft prints each
# choice; ours.json says the path its rows ran). The same bf16 steps on the other path give the step-level comparison.
if [ "$fused_ok" -eq 1 ]; then
  if grep -q '"precision":"bf16".*"attention":"fused"' "$out/ours.json" 2>/dev/null; then other=unfused; else other=fused; fi
  section "the same bf16 steps with the $other attention: peft bench --train-step --attention $other ($graph_methods× bf16)" | tee -a "$out/steps.log"
  # shellcheck disable=SC2086
  run_steps "$other-attention steps" "$out/ours-other-attention.json" "$graph_methods" --attention "$other" --batch $batches \
    --precision bf16 --repeats "$repeats"
else
  echo "== the other attention path: skipped (the tensor-core attention failed its case)" | tee -a "$out/steps.log"
fi

# Each Linear's bias is added in cuBLASLt's epilogue (the qkv output and fc1's kept pre-activation written in 16 bits
# from it); the same bf16 steps with a GEMM and a bias pass give the step-level comparison.
if [ "$epilogues_ok" -eq 1 ]; then
  section "the same bf16 steps with a bias pass after each GEMM: peft bench --train-step --linear-epilogues off ($graph_methods× bf16)" | tee -a "$out/steps.log"
  # shellcheck disable=SC2086
  run_steps "steps without epilogues" "$out/ours-no-epilogues.json" "$graph_methods" --linear-epilogues off --batch $batches \
    --precision bf16 --repeats "$repeats"
else
  echo "== the steps without epilogues: skipped (every step already ran without them)" | tee -a "$out/steps.log"
fi

# At every batch: launches weigh most at 32, the kernels' own speed at 128 (where the last runs fell furthest behind).
section "where a step's time goes: peft bench --train-step --profile ($graph_methods× bf16, batch $batches)" | tee -a "$out/steps.log"
# shellcheck disable=SC2086
run_steps "profile" "" "$graph_methods" --profile --batch $batches --precision bf16 --repeats 1

if [ "$peer_rc" -eq 0 ]; then
  section "the table again, with the graphed and other-attention columns (timm_step.py --peer-rows)" | tee -a "$out/peer.log"
  if python3 "$peer" --model vit_base_patch16_224 --peer-rows "$out/peer.json" --ours "$out/ours.json" "$out/ours-graph.json" \
       --ours-other "$out/ours-other-attention.json" > "$out/table.tmp" 2>>"$out/peer.log"; then
    sed -n '/^The engine over/,$p' "$out/table.tmp" > "$out/table.md"
    tee -a "$out/peer.log" < "$out/table.md"
  else
    echo "== the table again: FAILED (table.md keeps the first one)"
  fi
  rm -f "$out/table.tmp"
fi
# Last, as it needs no GPU: ptxas's report on every kernel from this machine's NVRTC for this GPU (registers, spills),
# to compare with the NVRTC the kernels were checked with (peft kernels on the build machine).
gpu_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
section "the kernels as this machine's NVRTC compiles them: peft kernels --arch sm_${gpu_arch:-90}" | tee "$out/kernels.log"
"$peft" kernels --arch "sm_${gpu_arch:-90}" >> "$out/kernels.log" 2>&1 || echo "== peft kernels: FAILED (see kernels.log)"
tail -n 1 "$out/kernels.log"
echo "== results in $out: machine.txt selftest.log steps.log ours.json ours-graph.json ours-other-attention.json ours-no-epilogues.json peer.log peer.json table.md kernels.log"
[ "$rc" -eq 0 ] && section "result: every op passed on the GPU" || section "result: FAILED"
exit $rc
