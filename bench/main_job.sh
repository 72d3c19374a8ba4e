#!/usr/bin/env bash
# End-to-end time of the default main job (`dgx sweep rrr --mask periphery`: decoy-cxr, SQLite, offline W&B)
# in a fresh folder, so nothing is cached. Prints the table, the wall time, and where the time went: before the
# first trial (start-up, data generation, study creation), each study's search and seed phases (summed trial
# durations from the study storage), and what is left (between trials, and the report). About 3-4 min on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dgx="${DGX:-$root/.venv/bin/dgx}"
python="$(dirname "$dgx")/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
start=$(date +%s.%N)
"$dgx" sweep rrr --mask periphery > table.md 2> log.txt
end=$(date +%s.%N)
cat table.md
"$python" - "$start" "$end" <<'PY'
import sys
from collections import defaultdict

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
start, end = (float(v) for v in sys.argv[1:3])
wall = end - start
storage = "sqlite:///runs/dgx.db"
spent, count, first = defaultdict(float), defaultdict(int), None
for summary in optuna.get_all_study_summaries(storage):
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    for t in study.get_trials(deepcopy=False):
        if t.datetime_start is None or t.datetime_complete is None:
            continue
        key = (summary.study_name, t.user_attrs.get("phase", "?"))
        spent[key] += (t.datetime_complete - t.datetime_start).total_seconds()
        count[key] += 1
        first = t.datetime_start.timestamp() if first is None else min(first, t.datetime_start.timestamp())
print(f"main job wall time: {wall:.0f} s ({int(wall // 60)} min {wall % 60:02.0f} s)")
before = (first - start) if first is not None else float("nan")
print(f"  before the first trial (start-up, data generation, studies): {before:6.1f} s")
for (study, phase), s in sorted(spent.items()):
    print(f"  {study:<40} {phase:<7} {count[(study, phase)]:2d} trial(s) {s:6.1f} s  ({s / count[(study, phase)]:.1f} s each)")
rest = wall - before - sum(spent.values())
print(f"  the rest (between trials, per-plan data loading, report):   {rest:6.1f} s")
PY
