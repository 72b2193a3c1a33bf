#!/usr/bin/env bash
# Fuzzes Darkroom's readers of untrusted bytes for a given time, from real
# files: the decoders (JPEG, PNG, WebP), the header probe, the whole-file
# check, the EXIF parser, the thumbnail renderer, the analyze and upload body
# readers (JSON, multipart) and the thumbnail query parser (crates/fuzz).
#
#   scripts/fuzz.sh [SECONDS] [JOBS]      # default 600 s, one job per core
#
# Seeds: Pillow's test images (fetched here by `darkroom models fetch
# --test-corpus`, pinned and hash-checked), the sample photos, the parity
# fixtures. Each job runs its own seed (1, 2, ...); cases/s and failures are
# printed as it goes. A failing input is saved under var/fuzz/JOB/ and named
# with its case number; `darkroom-fuzz --seed S --case N` (same seeds)
# replays it. A crash that takes the process down (a signal, the 4 GiB
# address-space cap) leaves its input as var/fuzz/JOB/crash-*.bin.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
jobs="${2:-$(nproc)}"
home="${DARKROOM_HOME:-var}"

cargo build --release --locked -p fuzz -p darkroom >&2
./target/release/darkroom --home "$home" models fetch --test-corpus >&2

seeds=(--seeds "$home/corpus/pillow" --seeds "$home/samples" --seeds crates/imaging/tests/fixtures/parity/inputs)
printf '==> fuzzing for %s s in %s jobs\n' "$seconds" "$jobs" >&2
pids=()
for job in $(seq 1 "$jobs"); do
  out="$home/fuzz/$job"
  mkdir -p "$out"
  (
    # A runaway allocation fails here instead of taking the machine down.
    ulimit -v $((4 * 1024 * 1024))
    set +e
    ./target/release/darkroom-fuzz "${seeds[@]}" --seed "$job" --seconds "$seconds" --out "$out" >"$out/report.txt"
    rc=$?
    if [ "$rc" -gt 1 ] && [ -f "$out/current.bin" ]; then
      crash="$out/crash-$(date +%s).bin"
      mv "$out/current.bin" "$crash"
      echo "CRASH (exit $rc): input saved to $crash" >>"$out/report.txt"
    fi
    exit "$rc"
  ) &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
  printf '\n--- job %s (seed %s)\n' "$((i + 1))" "$((i + 1))"
  cat "$home/fuzz/$((i + 1))/report.txt"
done
total=$(cat "$home"/fuzz/*/report.txt | awk '/ cases in / {c += $1; s = ($4 > s ? $4 : s)} END {printf "%d cases in %d s: %.0f cases/s", c, s, c / s}')
printf '\n==> %s over %s jobs\n' "$total" "$jobs"
if [ "$failed" != 0 ]; then
  echo "==> FAILURES: see the reports above and the inputs under $home/fuzz/" >&2
  exit 1
fi
echo "==> no failures"
