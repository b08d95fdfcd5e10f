#!/usr/bin/env bash
# Everything issue 25 asks of a CUDA GPU, in one run of at most 6 minutes, from a checkout, installing nothing:
#
#     OUT=/path/to/results bash bench/gpu_check.sh        # OUT defaults to ./gpu-check
#
# The GPU machine has no network and no pip: digitrec runs from this checkout's src/ with the wheels that
# torch lacks (platformdirs, ...) put in /tmp/site beforehand (PYTHONPATH=/tmp/site:$PWD/src python3).
# PYTHON and SITE override the interpreter and that folder; BUDGET_SECONDS the deadline (345 s).
#
#  1. the environment: GPU, torch, which of digitrec's imports are missing
#  2. the GPU correctness tests (tests/test_cuda.py: graphed against eager steps, resume, the CLI), if pytest is there
#  3. digitrec train --recipe quick: eager and CUDA graph in fp32, seeds 0 1 2 (one at a time); graph in bf16, seed 0
#  4. digitrec train --recipe full with the CUDA graph, seed 0
#  5. the full candidate (--ema 0.999), seeds 0 1 2 as three processes at once, then their ensemble
#  6. bench/speed.py --device cuda (tutorial cnn vs fast quick to 99 %, inference), with what time is left
#  7. a table of every run: training seconds, validation and test accuracy (with and without the EMA)
#
# Each part runs under its own `timeout` and a shared deadline; a part that fails or times out does not
# stop the others. Logs go to $OUT/logs, each run's config, metrics, log and weights to $OUT/runs, the
# table to $OUT/summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PYTHON:-$(command -v python3 || command -v python)}
SITE=${SITE:-/tmp/site}
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
RUNS=$(mktemp -d)  # where runs train; only their small files are copied to $OUT/runs
export PY RUNS
mkdir -p "$OUT/logs" "$OUT/runs"
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_SECONDS:-345}))  # the table and the clean-up after it take a few seconds more
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
say() { echo "$*" | tee -a "$OUT/summary.txt"; }

# part NAME LIMIT COMMAND...: run COMMAND with at most LIMIT seconds (less if the deadline is nearer), log to logs/NAME.log
part() {
    local name=$1 limit=$2 left
    shift 2
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 10 ]; then say "-- $name: skipped, out of time"; return 1; fi
    [ "$limit" -gt "$left" ] && limit=$left
    local started=$(date +%s%N)
    timeout -k 5 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    local code=$?
    local tenths=$((($(date +%s%N) - started) / 100000000))
    say "-- $name: exit $code in $((tenths / 10)).$((tenths % 10)) s (limit $limit s)$([ $code = 124 ] && echo ', TIMED OUT')"
    return $code
}

# train NAME LIMIT FLAGS...: digitrec train into $RUNS/NAME, then copy its small files to $OUT/runs/NAME
train() {
    local name=$1 limit=$2
    shift 2
    part "train-$name" "$limit" "$PY" -m digitrec train --device cuda --out "$RUNS/$name" --quiet "$@"
    local code=$?
    mkdir -p "$OUT/runs/$name"
    for file in config.json metrics.json log.jsonl weights.safetensors; do
        [ -f "$RUNS/$name/$file" ] && cp "$RUNS/$name/$file" "$OUT/runs/$name/"
    done
    [ $code = 0 ] || say "   $(tail -n 1 "$OUT/logs/train-$name.log")"
    return $code
}

say "gpu_check started $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $("$PY" --version 2>&1), PYTHONPATH=$PYTHONPATH"

# 1. the environment (nothing is installed) ---------------------------------------------------------
part environment 30 "$PY" - <<'PYTHON'
import importlib
import subprocess

try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10).stdout.strip())
except (OSError, subprocess.SubprocessError) as error:
    print("nvidia-smi:", error)
missing = []
for name in ["torch", "numpy", "PIL", "click", "rich", "platformdirs", "scipy", "safetensors", "matplotlib",
             "pydantic", "onnx", "onnxruntime", "pytest", "hypothesis"]:
    try:
        importlib.import_module(name)
    except Exception as error:
        missing.append(f"{name} ({type(error).__name__})")
print("missing:", ", ".join(missing) or "nothing")
import torch

print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU:", torch.cuda.is_available() and torch.cuda.get_device_name())
import digitrec.cli
import digitrec.train  # what `digitrec train` imports

print("digitrec imports from", digitrec.__file__)
PYTHON
sed 's/^/   /' "$OUT/logs/environment.log" | tee -a "$OUT/summary.txt"

# 2. correctness on the GPU ---------------------------------------------------------------------------
if "$PY" -c 'import pytest' 2>/dev/null; then
    part tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
    say "   $(tail -n 1 "$OUT/logs/tests.log")"
else
    say "-- tests: skipped, pytest is not importable (its wheel, with pluggy, iniconfig and packaging, goes in $SITE)"
fi

# 3. quick: eager against the CUDA graph in fp32 (auto's choice on CUDA), three seeds; the graph in bf16 --
for seed in 0 1 2; do
    for graph in off on; do
        train "quick-fp32-graph_$graph-seed$seed" 25 --recipe quick --precision fp32 --cuda-graph "$graph" --seed "$seed"
    done
done
train "quick-bf16-graph_on-seed0" 25 --recipe quick --precision bf16 --cuda-graph on --seed 0

# 4. full with the CUDA graph ------------------------------------------------------------------------
train full-seed0 60 --recipe full --cuda-graph on --seed 0

# 5. the full candidate with EMA, three seeds at once, and their ensemble -----------------------------
for seed in 0 1 2; do
    train "full_ema-seed$seed" 90 --recipe full --ema 0.999 --cuda-graph on --seed "$seed" &
done
wait
part ensemble 30 "$PY" -m digitrec evaluate "$RUNS/full_ema-seed0" "$RUNS/full_ema-seed1" "$RUNS/full_ema-seed2" --json
say "ensemble of full_ema seeds 0-2: $(grep -o '"test_accuracy": [0-9.]*' "$OUT/logs/ensemble.log" | head -n 1)"

# 6. bench/speed.py, with what time is left ----------------------------------------------------------
part speed 60 "$PY" bench/speed.py --device cuda --json "$OUT/speed.json"
tail -n 5 "$OUT/logs/speed.log" | tee -a "$OUT/summary.txt"

# 7. the table ---------------------------------------------------------------------------------------
"$PY" - "$OUT/runs" <<'EOF' | tee -a "$OUT/summary.txt"
import json, statistics, sys
from pathlib import Path
rows = {}
print(f"{'run':<32}{'train s':>9}{'valid %':>9}{'test %':>8}{'no-EMA v/t %':>16}  precision graph")
for folder in sorted(Path(sys.argv[1]).iterdir()):
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        print(f"{folder.name:<32}  (no metrics: failed or timed out)")
        continue
    plain = metrics.get("without_ema")
    plain = f"{100 * plain['validation_accuracy']:.2f}/{100 * plain['test_accuracy']:.2f}" if plain else ""
    provenance = metrics["provenance"]
    print(f"{folder.name:<32}{metrics['train_seconds']:>9.2f}{100 * metrics['validation_accuracy']:>9.2f}"
          f"{100 * metrics['test_accuracy']:>8.2f}{plain:>16}  {provenance['precision']} {provenance.get('cuda_graph')}")
    rows.setdefault(folder.name.rsplit("-seed", 1)[0], []).append(metrics)
print("\nmedians over seeds:")
for name, group in rows.items():
    print(f"{name:<32}{statistics.median(m['train_seconds'] for m in group):>9.2f} s  "
          f"test mean {100 * statistics.mean(m['test_accuracy'] for m in group):.2f} %  ({len(group)} runs)")
EOF
say "gpu_check finished in $(($(date +%s) - START)) s"
rm -rf "$RUNS"
