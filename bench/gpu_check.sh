#!/usr/bin/env bash
# Everything issue 25 asks of a CUDA GPU, in one run of about 6-7 minutes (8 at most), from a checkout:
#
#     OUT=/path/to/results bash bench/gpu_check.sh        # OUT defaults to ./gpu-check
#     SKIP_INSTALL=1 PYTHON=.venv/bin/python bash bench/gpu_check.sh   # digitrec already installed there
#
#  1. install digitrec (keeping a CUDA torch that is already there), say whether torch sees a GPU
#  2. the GPU correctness tests (tests/test_cuda.py: graphed against eager steps, resume, the CLI)
#  3. bench/speed.py --device cuda (tutorial cnn vs fast quick to 99 %, inference)
#  4. digitrec train --recipe quick: eager and CUDA graph, fp32 and bf16, seeds 0 1 2 (one at a time)
#  5. digitrec train --recipe full with the CUDA graph, seed 0
#  6. the full candidate (--ema 0.999), seeds 0 1 2 as three processes at once, then their ensemble
#  7. a table of every run: training seconds, validation and test accuracy (with and without the EMA)
#
# Each part has its own time limit and a shared deadline; a part that fails or times out does not stop
# the others. Logs go to $OUT/logs, each run's config, metrics, log and weights to $OUT/runs, the table
# to $OUT/summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PYTHON:-$(command -v python || command -v python3)}
RUNS=$(mktemp -d)  # where runs train; only their small files are copied to $OUT/runs
export PY RUNS
mkdir -p "$OUT/logs" "$OUT/runs"
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_SECONDS:-465}))
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
    return $code
}

say "gpu_check started $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# 1. install -------------------------------------------------------------------------------------------
install() {
    nvidia-smi || echo "nvidia-smi: not found or failed"
    if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "a CUDA torch is installed: $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'); keeping it"
        "$PY" -m pip install --no-deps -e . || return 1
        # digitrec's other requirements (base, train and onnx extras) without torch, and pytest for part 2
        "$PY" - >"$RUNS/requirements.txt" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for requirement in project["dependencies"] + extras["train"] + extras["onnx"] + ["pytest>=8", "hypothesis>=6.100", "httpx>=0.27"]:
    if not requirement.startswith("torch"):
        print(requirement)
EOF
        "$PY" -m pip install -r "$RUNS/requirements.txt" || return 1
    else
        echo "NO CUDA torch before installing (torch missing, or it sees no GPU): installing digitrec's pinned torch"
        "$PY" -m pip install -e '.[train,onnx]' pytest hypothesis httpx || return 1
    fi
    "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU:", torch.cuda.is_available() and torch.cuda.get_device_name())'
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' || { echo "NO CUDA: torch sees no GPU; every GPU part below will fail"; return 3; }
}
if [ -n "${SKIP_INSTALL:-}" ]; then
    say "-- install: skipped (SKIP_INSTALL); $("$PY" -c 'import torch; print("torch", torch.__version__, "GPU:", torch.cuda.is_available())' 2>&1)"
else
    part install 200 bash -c "$(declare -f install); install"
    say "   $(grep -E '^(torch |NO CUDA)' "$OUT/logs/install.log" | tr '\n' ' ')"
fi

# 2. correctness on the GPU ---------------------------------------------------------------------------
part tests 100 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
say "   $(tail -n 1 "$OUT/logs/tests.log")"

# 3. bench/speed.py ----------------------------------------------------------------------------------
part speed 90 "$PY" bench/speed.py --device cuda --json "$OUT/speed.json"
tail -n 5 "$OUT/logs/speed.log" | tee -a "$OUT/summary.txt"

# 4. quick: eager against the CUDA graph, fp32 and bf16, three seeds ----------------------------------
for seed in 0 1 2; do
    for precision in fp32 bf16; do
        for graph in off on; do
            train "quick-$precision-graph_$graph-seed$seed" 30 --recipe quick --precision "$precision" --cuda-graph "$graph" --seed "$seed"
        done
    done
done

# 5. full with the CUDA graph ------------------------------------------------------------------------
train full-seed0 90 --recipe full --seed 0

# 6. the full candidate with EMA, three seeds at once, and their ensemble -----------------------------
for seed in 0 1 2; do
    train "full_ema-seed$seed" 150 --recipe full --ema 0.999 --seed "$seed" &
done
wait
part ensemble 45 "$PY" -m digitrec evaluate "$RUNS/full_ema-seed0" "$RUNS/full_ema-seed1" "$RUNS/full_ema-seed2" --json
say "ensemble of full_ema seeds 0-2: $(grep -o '"test_accuracy": [0-9.]*' "$OUT/logs/ensemble.log" | head -n 1)"

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
