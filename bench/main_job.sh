#!/usr/bin/env bash
# End-to-end time of the default main job (`dgx sweep rrr --mask periphery`: decoy-cxr, SQLite, offline W&B)
# in a fresh folder, so nothing is cached. Prints the wall time and the table. About 3 minutes on 2 CPU cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dgx="${DGX:-$root/.venv/bin/dgx}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
start=$(date +%s.%N)
"$dgx" sweep rrr --mask periphery > table.md 2> log.txt
end=$(date +%s.%N)
cat table.md
python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); print(f'main job wall time: {s:.0f} s ({int(s // 60)} min {s % 60:02.0f} s)')" "$start" "$end"
