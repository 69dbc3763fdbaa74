#!/usr/bin/env bash
# Installs NVRTC 11.8 (libnvrtc11.2 + libnvrtc-builtins11.8) from Debian's non-free component, so CUDA kernels can be
# compiled to PTX/cubin without a GPU. Non-free is enabled by copying the machine's own Debian apt sources with the
# component changed; no host name is written here. Needs root. Safe to run twice.
set -euo pipefail
if ldconfig -p | grep -q 'libnvrtc.so.11.2'; then echo "install-nvrtc: NVRTC already installed"; exit 0; fi
if ! apt-cache show libnvrtc11.2 >/dev/null 2>&1; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed -E 's/^Components:.*/Components: contrib non-free/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/engine-non-free.sources
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed -E 's/ main( |$)/ contrib non-free\1/' > /etc/apt/sources.list.d/engine-non-free.list
  else
    echo "install-nvrtc: no Debian apt sources found to derive non-free from" >&2; exit 1
  fi
  apt-get update -q
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libnvrtc11.2 libnvrtc-builtins11.8
