#!/usr/bin/env bash
# Make a trained number reader the bundled one: calibrate it on validation strings, measure it on test
# strings of every kind of writing, copy its files into src/digitrec/bundled/reader and export its ONNX
# copy (checked against torch on strings of test digits). About 12 minutes on 2 loaded cores.
#
#     bash bench/adopt_reader.sh RUN        # RUN: a run folder (config.json, metrics.json, log.jsonl,
#                                           # weights.safetensors), e.g. one that bench/gpu_reader.sh wrote
# Afterwards: set the recorded values it prints in tests/test_reading.py
# (test_the_bundled_readers_calibration_is_the_recorded_one) and docs/robust-numbers.md.
set -euo pipefail
RUN=${1:?give the run folder of the reader}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
BUNDLED=src/digitrec/bundled/reader
for file in config.json metrics.json log.jsonl weights.safetensors; do
    [ -f "$RUN/$file" ] || { echo "$RUN/$file is missing"; exit 1; }
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
$PYTHON bench/calibrate_reader.py --reader "$RUN" --count 2000 --save | tee "$RUN/calibration-validation.txt"
$PYTHON bench/calibrate_reader.py --reader "$RUN" --count 2000 --split test | tee "$RUN/calibration-test.txt"
$PYTHON bench/read_numbers.py --reader "$RUN" --split test --lengths 4 --count 200 | tee "$RUN/read-numbers-test.txt"
cp "$RUN"/{config.json,metrics.json,log.jsonl,weights.safetensors,calibration.json} "$BUNDLED/"
rm -f "$BUNDLED/model.onnx"  # replaced: the export refuses to write over a file
$PYTHON -m digitrec export "$BUNDLED" --out "$BUNDLED/model.onnx"
$PYTHON - <<'PY'
import json
content = json.load(open("src/digitrec/bundled/reader/calibration.json"))
print(f"recorded: temperature {content['temperature']}, bias {content['bias']}, unsure_below {content['unsure_below']}, "
      f"validation readings {content['record']['validation']['readings']}")
PY
