#!/usr/bin/env bash
# The SASS (the GPU's own instructions) of a CUDA kernel family, without a GPU: `peft kernels` compiles the family with
# NVRTC into a cubin and cuobjdump disassembles it. The PTX shows what the compiler front end asked for; the SASS shows
# what ptxas made of it: whether a row's loads are issued back to back (predicated) or each waits behind a branch, what
# a loop keeps in registers. cuobjdump comes from Debian non-free's nvidia-cuda-toolkit package, downloaded and
# unpacked (not installed, 84 MB) into ~/.cache/peft-engine/cuda-tools the first time; tools/install-nvrtc.sh enables
# non-free.
#
#   tools/sass.sh FAMILY [KERNEL] [--arch sm_90] [--loads]
#       FAMILY   cuda/FAMILY.cu (attention, norm, peft, ...)
#       KERNEL   only this kernel (default: every kernel of the family)
#       --arch   the architecture (default sm_90)
#       --loads  only the global and shared loads and stores, barriers and branches, in program order
#
# e.g. tools/sass.sh activations bias_gelu_backward --loads
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: tools/sass.sh FAMILY [KERNEL] [--arch sm_90] [--loads]"
family="" kernel="" arch=sm_90 loads=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs a value, e.g. sm_90}; shift ;;
    --loads) loads=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) if [ -z "$family" ]; then family=$1; elif [ -z "$kernel" ]; then kernel=$1; else echo "$usage" >&2; exit 2; fi ;;
  esac
  shift
done
[ -n "$family" ] || { echo "$usage" >&2; exit 2; }

tools="${XDG_CACHE_HOME:-$HOME/.cache}/peft-engine/cuda-tools"
cuobjdump="$tools/usr/bin/cuobjdump"
if [ ! -x "$cuobjdump" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "sass: fetching cuobjdump (Debian's nvidia-cuda-toolkit, unpacked into $tools)" >&2
  chmod 755 "$work" # apt's _apt user writes the download there
  (cd "$work" && apt-get download nvidia-cuda-toolkit >/dev/null) \
    || { echo "sass: apt-get download nvidia-cuda-toolkit failed (non-free enabled? run tools/install-nvrtc.sh first)" >&2; exit 1; }
  mkdir -p "$tools"
  dpkg -x "$work"/nvidia-cuda-toolkit_*.deb "$work/unpacked"
  mkdir -p "$tools/usr/bin"
  cp "$work/unpacked/usr/bin/nvdisasm" "$tools/usr/bin/nvdisasm" # cuobjdump runs it for -sass
  cp "$work/unpacked/usr/bin/cuobjdump" "$tools/usr/bin/cuobjdump.tmp" && mv "$tools/usr/bin/cuobjdump.tmp" "$cuobjdump"
fi
export PATH="$tools/usr/bin:$PATH"

dotnet build "$repo/src/Cli" -c Release -v q -nologo >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out" ${work:+"$work"}' EXIT
dotnet "$repo/src/Cli/bin/Release/net10.0/peft.dll" kernels --arch "$arch" --family "$family" --out "$out" >&2
cubin="$out/${family%.cu}-$arch.cubin"
if [ "$loads" = 1 ]; then
  "$cuobjdump" -sass ${kernel:+-fun "$kernel"} "$cubin" \
    | grep -E 'Function :|\b(LDG|STG|LDS|STS|LD|ST|LDSM|BAR|BRA|EXIT)\b' | sed -E 's@ +/\* 0x[0-9a-f]+ \*/@@; s@^ +@@'
else
  "$cuobjdump" -sass ${kernel:+-fun "$kernel"} "$cubin"
fi
