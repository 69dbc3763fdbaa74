#!/usr/bin/env bash
# Unpacks the NVIDIA driver's CUDA library (libcuda.so.1, from Debian non-free's libcuda1 package; downloaded, not
# installed) into ${XDG_CACHE_HOME:-~/.cache}/peft-engine/driver, so that CudaEntryPointsTests can check every driver
# API function our bindings import against a real driver library on a machine without a GPU. Nothing loads it there
# but that test. Run tools/install-nvrtc.sh first (it enables non-free). Safe to run twice.
set -euo pipefail
driver="${XDG_CACHE_HOME:-$HOME/.cache}/peft-engine/driver"
if [ -f "$driver/libcuda.so.1" ]; then echo "unpack-libcuda: already in $driver"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt's _apt user writes the download there
(cd "$work" && apt-get download libcuda1 >/dev/null 2>&1) \
  || { echo "unpack-libcuda: apt-get download libcuda1 failed (non-free enabled? run tools/install-nvrtc.sh first)" >&2; exit 1; }
dpkg -x "$work"/libcuda1_*.deb "$work/unpacked"
library=$(find "$work/unpacked" -name 'libcuda.so.[0-9]*.*' -type f | head -n 1)
[ -n "$library" ] || { echo "unpack-libcuda: no libcuda.so in the package" >&2; exit 1; }
mkdir -p "$driver"
cp "$library" "$driver/libcuda.so.1.tmp" && mv "$driver/libcuda.so.1.tmp" "$driver/libcuda.so.1"
echo "unpack-libcuda: $(basename "$library") unpacked to $driver/libcuda.so.1"
