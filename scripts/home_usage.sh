#!/usr/bin/env bash
# What the Darkroom home takes on disk, part by part: the figures the README's
# "what it costs" section quotes.
#
#   scripts/home_usage.sh [HOME]      # default: $DARKROOM_HOME or var
set -euo pipefail
cd "$(dirname "$0")/.."
home="${1:-${DARKROOM_HOME:-var}}"
[ -d "$home" ] || { echo "error: $home is not a folder: run ./scripts/setup.sh first" >&2; exit 1; }

mib() { du -sm "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
row() { printf '%-48s %6s MiB\n' "$1" "$2"; }

row "downloads ($home/cache/downloads)" "$(mib "$home/cache/downloads")"
row "conversion venv ($home/venv)" "$(mib "$home/venv")"
row "ONNX Runtime ($home/lib)" "$(mib "$home/lib")"
row "models ($home/models)" "$(mib "$home/models")"
row "photos ($home/photos, $home/samples)" "$(mib "$home/photos" "$home/samples")"
row "extracted inputs ($home/cache/extracted)" "$(mib "$home/cache/extracted")"
row "set-up total" "$(mib "$home/cache" "$home/venv" "$home/lib" "$home/models" "$home/photos" "$home/samples")"
row "test and benchmark venvs (moto-venv, peer-venv)" "$(mib "$home/moto-venv" "$home/peer-venv")"
row "data of the embedded deployment ($home/data)" "$(mib "$home/data")"
row "everything under $home" "$(mib "$home")"
