#!/usr/bin/env bash
# One kernel at a time, this tree beside an earlier commit of it, alternating on the same machine (peft bench --op):
#   bash bench/ab.sh <commit> [rounds] [op,...]   (default 3 rounds, every op below; the earlier tree is built in a git
#                                                 worktree under $TMPDIR)
# Prints, per op and shape, the median ms of each tree over the rounds and the speed-up (before / after); the trees
# take turns going first. Each
# timing is the median of 100 calls with the JIT's tier-up delay off (DOTNET_TC_CallCountingDelayMs=0), so both trees'
# kernels have left tier-0 code: steady-state kernels. The GEMM (ViT-B/16's products at batch 1 and 8, Swin-B's stage 4
# at batch 1, ConvNeXt-B's stage-1 and -2 fc2 at batch 8) is compared against OpenBLAS by bench/run.sh peers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  sed -n 2,7p "$0" | sed 's/^# \{0,1\}//'
  [ $# -lt 1 ] && exit 2 || exit 0
fi
commit=$(git rev-parse --verify "$1^{commit}") || { echo "error: '$1' is not a commit of this repository" >&2; exit 2; }
rounds=${2:-3}
only=${3:-}
before="${TMPDIR:-/tmp}/peft-ab-${commit:0:12}"
[ -d "$before" ] || git worktree add --detach "$before" "$commit" >/dev/null
echo "building $commit in $before and this tree ..." >&2
dotnet build "$before/src/Cli" -c Release -v q -nologo >/dev/null
dotnet build src/Cli -c Release -v q -nologo >/dev/null
after="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted changes')"
if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
export DOTNET_TC_CallCountingDelayMs=0
cases=("gelu 1576x3072" "gelu-backward 1576x3072" "softmax 18912x197" "layernorm 1576x768" "layernorm-backward 1576x768" "bias 1576x3072"
       "scale-shift-backward 1576x3072" "scale-shift-backward 1576x768" "scale-shift-gelu-backward 1576x3072" "softmax-backward 18912x197"
       "depthwise-conv 8x56x56x128" "depthwise-conv 8x14x14x512" "depthwise-conv 8x7x7x1024"
       "depthwise-conv 1x56x56x128" "depthwise-conv 1x14x14x512" "depthwise-conv 1x7x7x1024"
       "depthwise-conv-backward 8x56x56x128" "depthwise-conv-backward 8x14x14x512" "depthwise-conv-backward 8x7x7x1024"
       "patchify 8x56x56x128" "attention 8x197x12x64" "attention 64x49x4x32" "attention 4x49x16x32"
       "attention-forward 8x197x12x64" "attention-forward 64x49x4x32"
       "gemm 197x2304x768" "gemm 197x768x3072" "gemm 1576x2304x768" "gemm 1576x768x3072" "gemm 49x4096x1024"
       "gemm 25088x128x512" "gemm 6272x256x1024" "adam 85875556")
# An op the earlier tree does not have is left out (with a note), not failed on.
known=$(dotnet "$before"/src/Cli/bin/Release/net10.0/peft.dll bench --list | awk '{print $1}')
kept=()
for c in "${cases[@]}"; do
  if [ -n "$only" ] && ! grep -qx "${c%% *}" <<< "${only//,/$'\n'}"; then continue; fi
  if grep -qx "${c%% *}" <<< "$known"; then kept+=("$c"); else echo "skipping ${c%% *}: not in ${commit:0:7}" >&2; fi
done
if [ ${#kept[@]} -eq 0 ]; then
  echo "error: no case for '$only'; the ops compared are: $(printf '%s\n' "${cases[@]%% *}" | sort -u | xargs)" >&2
  exit 2
fi
cases=("${kept[@]}")
log=$(mktemp)
for ((r = 1; r <= rounds; r++)); do
  for c in "${cases[@]}"; do
    set -- $c
    order="before after"; ((r % 2 == 0)) && order="after before" # whichever runs second in a pair can be slower
    for tree in $order; do
      dir=$before; [ $tree = after ] && dir=.
      ms=$(dotnet "$dir"/src/Cli/bin/Release/net10.0/peft.dll bench --op "$1" --shape "$2" --repeats 100 | tail -1 | awk -F'|' '{gsub(/ /, "", $4); print $4}')
      echo "$1 $2 $tree $ms" >> "$log"
      echo "round $r/$rounds: $1 $2 $tree $ms ms" >&2
    done
  done
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads, $(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo 'AVX2, no AVX-512'); before = ${commit:0:7}, after = $after; median of $rounds rounds of 100 calls each (tier-up delay off)"
echo
echo "| op | shape | before ms | after ms | before / after |"
echo "|---|---|---|---|---|"
for c in "${cases[@]}"; do
  set -- $c
  b=$(awk -v o="$1" -v s="$2" '$1==o && $2==s && $3=="before" {print $4}' "$log" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  a=$(awk -v o="$1" -v s="$2" '$1==o && $2==s && $3=="after" {print $4}' "$log" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  awk -v o="$1" -v s="$2" -v b="$b" -v a="$a" 'BEGIN {printf "| %s | %s | %.3f | %.3f | %.2f |\n", o, s, b, a, b / a}'
done
rm -f "$log"
