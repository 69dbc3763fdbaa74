#!/usr/bin/env bash
# Coverage-guided fuzzing of one input format with AFL++ and SharpFuzz:
#
#   tools/fuzz.sh TARGET SECONDS     TARGET: safetensors npz pth pickle npy png jpeg list cache config runconfig state
#
# Installs afl++ (apt) and the SharpFuzz instrumenter (dotnet tool) when missing, publishes tools/fuzz, instruments the
# engine's assemblies, seeds the corpus from tests/Fixtures, fuzzes for SECONDS and prints the executions and the
# findings (inputs under artifacts/fuzz/TARGET/findings/default/crashes: any exception other than InvalidInputException,
# or a hang). Replay one: artifacts/fuzz/TARGET/app/peft-fuzz TARGET < FILE.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${1:?usage: tools/fuzz.sh TARGET SECONDS}
seconds=${2:?usage: tools/fuzz.sh TARGET SECONDS}
out="$repo/artifacts/fuzz/$target"
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

command -v afl-fuzz >/dev/null || { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq --no-install-recommends afl++; }
export PATH="$PATH:$HOME/.dotnet/tools"
command -v sharpfuzz >/dev/null || dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0 >/dev/null

rm -rf "$out" && mkdir -p "$out/corpus"
dotnet publish "$repo/tools/fuzz" -c Release -o "$out/app" >/dev/null
for dll in Engine.Kernels.dll Engine.dll Engine.Models.dll; do sharpfuzz "$out/app/$dll" >/dev/null; done

fx="$repo/tests/Fixtures"
case $target in
  safetensors) cp "$fx/vit-tiny/weights.safetensors" "$out/corpus/" ;;
  npz|npy) cp "$fx/vit-tiny/input.npy" "$out/corpus/" ;;
  pth) cp "$fx/pth/checkpoint.pth" "$fx/pth/bare.pth" "$out/corpus/" ;;
  png) echo iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC | base64 -d > "$out/corpus/1x1.png" ;;
  jpeg) cp "$fx"/jpeg/*.jpg "$out/corpus/" ;;
  config) for fam in vit-tiny swin-tiny convnext-tiny; do cp "$fx/$fam/config.json" "$out/corpus/$fam.json"; done ;;
  runconfig) printf '{"Task":"t","TaskFolder":"/tmp","Classes":2,"Model":"vit_tiny_patch16_224","Recipe":{"Method":"ssf","LearningRate":0.005,"Epochs":3}}' > "$out/corpus/config.json" ;;
  list) printf 'images/0.png 0\nimages/1.png 1\n' > "$out/corpus/list.txt" ;;
  pickle) python3 -c "import zipfile,sys; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('bare/data.pkl'))" "$fx/pth/bare.pth" > "$out/corpus/bare.pkl" ;;
  cache) printf 'PEFTU8\0\001' > "$out/corpus/c.u8"
         python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<5i', 1, 2, 2, 3, 0) + bytes(12))" >> "$out/corpus/c.u8" ;;
  state) printf '{"EpochsDone":0,"Checkpoint":null,"Log":[],"Seconds":0}' > "$out/corpus/state.json" ;;
  *) echo "unknown target '$target'" >&2; exit 2 ;;
esac
if [ "$target" = npz ]; then python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]+'/a.npz','w'); z.write(sys.argv[1]+'/input.npy','x.npy'); z.close()" "$out/corpus" && rm "$out/corpus/input.npy"; fi

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_SKIP_BIN_CHECK=1
set +e
timeout $((seconds + 60)) afl-fuzz -V "$seconds" -t 10000 -m none -i "$out/corpus" -o "$out/findings" -- "$out/app/peft-fuzz" "$target" > "$out/afl.log" 2>&1
set -e
stats="$out/findings/default/fuzzer_stats"
if [ ! -f "$stats" ]; then tail -20 "$out/afl.log"; echo "afl-fuzz did not start (see $out/afl.log)"; exit 1; fi
execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
crashes=$(find "$out/findings/default/crashes" -type f ! -name README.txt | wc -l)
hangs=$(find "$out/findings/default/hangs" -type f | wc -l)
paths=$(awk -F: '/^corpus_count/ {gsub(/ /, "", $2); print $2}' "$stats")
echo "$target: $execs executions in ${seconds} s, $paths corpus entries, $crashes crash(es), $hangs hang(s)"
[ "$crashes" -eq 0 ] && [ "$hangs" -eq 0 ]
