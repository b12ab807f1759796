#!/usr/bin/env bash
# The full 24-epoch reference recipe through the real stages on one GPU, timed; for a lent H200.
#
#   bash benchmarks/gpu.sh                    # on the GPU machine (data at datasets/cifar10-jpeg.tar.xz)
#   GPU_SH_TINY=1 bash benchmarks/gpu.sh      # here, on the CPU: a tiny setting that checks the script
#
# The GPU machine has no internet and no albumentations: if .whl/ holds the wheels that
# benchmarks/fetch_gpu_wheels.sh fetched, they are installed to /tmp/site first. Prints the training time, the
# test accuracy and the achieved TFLOP/s (2.3 GFLOP per training image, SPEC.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$(pwd)
else
  export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
ARCHIVE=${ONECYCLE_CIFAR10_JPEG:-datasets/cifar10-jpeg.tar.xz}
WORK=${GPU_SH_WORK:-/tmp/onecycle-gpu}
OUT_DIR=${OUT:-$WORK/out}
mkdir -p "$WORK" "$OUT_DIR"

$PY - "$ARCHIVE" "$WORK" <<'PYEOF'
import sys, os, yaml
archive, work = sys.argv[1], sys.argv[2]
raw = yaml.safe_load(open("params.yaml"))
raw["data"].update(source="folder", path=os.path.abspath(archive))
raw["augment"]["backend"] = "tensor"
raw["train"].update(max_lr=0.08, device="cuda", precision="bf16", compile=True)
if os.environ.get("GPU_SH_TINY"):
    raw["data"].update(train_samples=1000, test_samples=500)
    raw["model"]["width"] = 16
    raw["train"].update(epochs=2, device="cpu", precision="auto", compile=False)  # bf16 only where native
open(f"{work}/params.yaml", "w").write(yaml.safe_dump(raw, sort_keys=False))
PYEOF

[ -n "${GPU_SH_TINY:-}" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The stages' commands (and every path) come from dvc.yaml through onecycle.pipeline; outputs under $WORK.
$PY -m onecycle.pipeline download --params "$WORK/params.yaml" --out-dir "$WORK"
start=$(date +%s.%N)
$PY -m onecycle.pipeline train_onecycle --params "$WORK/params.yaml" --out-dir "$WORK" \
  --input data/prepared="$WORK/data/prepared" 2>&1 | tr '\r' '\n' | awk '!/%\|/ || /100%\|/' | tee "$OUT_DIR/train.log"
end=$(date +%s.%N)
cp "$WORK/plots/train_history.csv" "$WORK/plots/training.png" "$WORK/metrics/train.json" "$OUT_DIR/"
cp "$WORK/metrics/details/train.json" "$OUT_DIR/train_details.json"
$PY - "$OUT_DIR/train.json" "$OUT_DIR/train_details.json" "$start" "$end" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1])) | json.load(open(sys.argv[2]))  # metrics, and the timings beside them
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"epochs: {m['epochs']}  max_lr: {m['max_lr']}")
print(f"training time (steps only, all epochs): {m['seconds']['training']:.1f} s; "
      f"epochs incl. test passes: {m['seconds']['total']:.1f} s; stage wall time incl. start-up and compile: {wall:.1f} s")
print(f"final test accuracy: {m['final']['test_acc']:.2f}%  (best {m['best']['test_acc']:.2f}%)")
print(f"throughput: {m['images_per_second']:,.0f} images/s = {m['images_per_second'] * 2.3e9 / 1e12:.1f} TFLOP/s")
PYEOF
