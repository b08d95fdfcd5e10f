#!/usr/bin/env bash
# Train number readers on strings written as people write them (recipe `robust`) on a GPU machine, side
# by side, then measure each on validation strings of every kind of writing; the small files go to $OUT.
#
#     OUT=/some/folder bash bench/gpu_reader.sh          # about 5.5 minutes in all
#
# Installs nothing (the GPU machine has no network): digitrec runs from this checkout's src/ with the
# wheels torch lacks in /tmp/site, as bench/gpu_check.sh does (PYTHON and SITE override python3 and that
# folder). If `pip` works there, `pip install -e '.[train,onnx]'` first does no harm.
#
# Settings (environment):
#   TRAIN_SECONDS (default 240): the time the training may take. The script first measures how fast
#     strings are made with all cores but one and how fast the GPU steps, and sets the steps to what fits
#     (at most MAX_STEPS, default 12000; under 3000 it trains nothing: too few to be worth it). Each
#     training is stopped by `timeout` at 2 x TRAIN_SECONDS + 60 s whatever happens.
#   VARIANTS (default "w16=;w24=--width 24 --seed 1"): readers trained at once, as name=extra `digitrec train`
#     flags separated by ";" (the cores making strings are shared out between them). When they could not
#     all reach ENOUGH_STEPS (default 10000) that way, only the first is trained, with every core.
#   RECIPE (default robust); EVAL_COUNT (default 200) validation strings of each kind per reader.
#   For a dry run on a CPU: DEVICE=cpu STEPS=20 (STEPS skips the sizing) and small VARIANTS.
# Writes to $OUT, for each variant NAME: NAME/{config.json,metrics.json,log.jsonl,weights.safetensors},
# NAME/train.txt (the training's output), NAME/validation.txt (bench/read_numbers.py on 200 validation
# strings of each kind, 4 digits); and timing.txt, versions.txt.
set -uo pipefail
OUT=${OUT:?set OUT to the folder the results go to}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
MAX_STEPS=${MAX_STEPS:-12000}
RECIPE=${RECIPE:-robust}
VARIANTS=${VARIANTS:-w16=;w24=--width 24 --seed 1}
DEVICE=${DEVICE:-cuda}
EVAL_COUNT=${EVAL_COUNT:-200}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
SITE=${SITE:-/tmp/site}
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # the string workers are single-threaded numpy; leave them the cores
started=$(date +%s)

"$PY" - > "$OUT/versions.txt" 2>&1 <<'PY'
import importlib.util, os, torch
missing = [name for name in ("numpy", "PIL", "platformdirs", "safetensors", "click", "rich", "scipy", "onnxruntime")
           if importlib.util.find_spec(name) is None]
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "cpus", os.cpu_count(), "missing:", missing or "none")
PY
cat "$OUT/versions.txt"

: > "$OUT/timing.txt"
IFS=';' read -ra RUNS <<< "$VARIANTS"
cat > /tmp/gpu-reader-timing.py <<'PY'
import itertools, sys, time
import torch
import torch.nn.functional as F
from digitrec import data, models, train
workers, seconds, most, recipe = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = train.resolve_config("reader", recipe)
mnist = data.load()
stream = data.string_batches(mnist.train, config.batch_size, 12345, mixture=config.strings, workers=workers)
next(stream)
started = time.perf_counter()
batches = list(itertools.islice(stream, 8 * workers))
making = (time.perf_counter() - started) / len(batches)  # s per batch, all workers together
stream.close()
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = models.create("reader", width=24).to(device).to(memory_format=torch.channels_last)  # the widest variant
optimizer = torch.optim.Adam(model.parameters(), config.lr)
def step(batch):
    pixels, columns, digits, lengths = batch
    with torch.autocast(device.type, dtype=torch.bfloat16):
        scores = model(pixels.to(device).contiguous(memory_format=torch.channels_last)).float().log_softmax(1)
    loss = F.ctc_loss(scores.permute(2, 0, 1), digits.to(device), columns, lengths, zero_infinity=True)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
for batch in batches[:5]:
    step(batch)
if device.type == "cuda":
    torch.cuda.synchronize()
started = time.perf_counter()
for batch in batches:
    step(batch)
if device.type == "cuda":
    torch.cuda.synchronize()
stepping = (time.perf_counter() - started) / len(batches)
per_step = max(making, stepping) * 1.2  # and evaluations, logging, sharing the GPU
steps = min(most, int(seconds / per_step) // 500 * 500)
print(f"strings: {1000 * making:.1f} ms per batch of {config.batch_size} with {workers} workers; GPU step "
      f"{1000 * stepping:.1f} ms (alone); -> {steps} steps in about {steps * per_step:.0f} s", file=sys.stderr)
print(steps)
PY
# size STEPS for ${#RUNS[@]} readers at once: batches of strings made per second by WORKERS processes each,
# and the GPU's time per step
size() {
    WORKERS=$(( ($(nproc --all) - ${#RUNS[@]}) / ${#RUNS[@]} ))
    (( WORKERS < 1 )) && WORKERS=1
    STEPS=$("$PY" /tmp/gpu-reader-timing.py "$WORKERS" "$TRAIN_SECONDS" "$MAX_STEPS" "$RECIPE" 2>> "$OUT/timing.txt")
}
if [ -z "${STEPS:-}" ]; then
    size
    if (( ${#RUNS[@]} > 1 )) && ! (( ${STEPS:-0} >= ${ENOUGH_STEPS:-10000} )); then
        echo "${#RUNS[@]} readers at once: only ${STEPS:-no} steps each; training ${RUNS[0]%%=*} alone" >> "$OUT/timing.txt"
        RUNS=("${RUNS[0]}")
        size
    fi
else
    WORKERS=$(( ($(nproc --all) - ${#RUNS[@]}) / ${#RUNS[@]} )); (( WORKERS < 1 )) && WORKERS=1
fi
cat "$OUT/timing.txt"
if ! [[ "$STEPS" =~ ^[0-9]+$ ]] || (( STEPS < ${MIN_STEPS:-3000} )); then
    echo "only ${STEPS:-no} steps would fit in ${TRAIN_SECONDS}s: not training (see $OUT/timing.txt)"; exit 1
fi

for run in "${RUNS[@]}"; do
    name=${run%%=*}; flags=${run#*=}
    mkdir -p "$OUT/$name"; rm -rf "/tmp/gpu-reader-$name"
    timeout --signal=INT --kill-after=20 $(( 2 * TRAIN_SECONDS + 60 )) \
        "$PY" -m digitrec train --model reader --recipe "$RECIPE" --steps "$STEPS" --string-workers "$WORKERS" \
        --device "$DEVICE" --out "/tmp/gpu-reader-$name" --quiet $flags > "$OUT/$name/train.txt" 2>&1 &
done
wait
for run in "${RUNS[@]}"; do
    name=${run%%=*}
    cat "$OUT/$name/train.txt"
    cp /tmp/gpu-reader-"$name"/{config.json,metrics.json,log.jsonl,weights.safetensors} "$OUT/$name/" 2>/dev/null \
        || echo "$name: training did not finish (see $OUT/$name/train.txt)"
done
echo "trained in $(( $(date +%s) - started )) s since the script started"

# each reader on validation strings of every kind (test strings are measured later, once, on the chosen one)
for run in "${RUNS[@]}"; do
    name=${run%%=*}
    [ -f "/tmp/gpu-reader-$name/weights.safetensors" ] || continue
    timeout 120 "$PY" bench/read_numbers.py --split validation --reader "/tmp/gpu-reader-$name" --count "$EVAL_COUNT" \
        --lengths 4 --no-speed > "$OUT/$name/validation.txt" 2>&1 &
done
wait
for run in "${RUNS[@]}"; do name=${run%%=*}; echo "== $name"; cat "$OUT/$name/validation.txt" 2>/dev/null; done
echo "done in $(( $(date +%s) - started )) s"
