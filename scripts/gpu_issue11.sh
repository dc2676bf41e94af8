#!/usr/bin/env bash
# On a lent GPU host, in one call of the workplace's `device` tool: issue 11's GPU goals.
#   1. here:  bash scripts/gpu_bundle.sh          (fills the git-ignored .gpu/, ~11 MB)
#   2. there: run(command="bash scripts/gpu_issue11.sh", carry=[".gpu"], timeout_s=590)
# Writes to $OUT: gpu.txt, lightsr.txt (edge light SR on the GPU, per 128² tile and batch),
# policies-*.json/.png/.log (hybrid and the baselines at 2048², lan and wifi, with the
# one-step img2img SR preset). SMOKE=1 runs the same steps on this CPU at toy sizes, with
# the packages already installed, to check the script before spending device time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "${SMOKE:-0}" = 1 ]; then
    py=$PWD/.venv/bin/python; device=cpu; preset=tiny; size=256; tile=32; overlap=8
    links=(lan); prompts=1; budget=300
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/.gpu/site
    py=python3; device=cuda; preset=arch-sd-turbo-1step; size=2048; tile=128; overlap=16
    links=(lan wifi); prompts=2; budget=420
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
"$py" - "$device" <<'PY' 2>&1 | tee "$OUT/lightsr.txt"
import sys, time
import numpy as np
from hybridsr.server.torchsr import TorchLightSR
device = sys.argv[1]
sr = TorchLightSR(device=device)
sync = __import__("torch").cuda.synchronize if device == "cuda" else (lambda: None)
tile = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
for batch in ((1, 4, 16) if device == "cuda" else (1, 2)):
    sr.upscale_batch([tile] * batch, 4); sync()  # warm-up: kernels, cudnn autotune
    times = []
    for _ in range(5):
        t = time.perf_counter(); sr.upscale_batch([tile] * batch, 4); sync()
        times.append(time.perf_counter() - t)
    print(f"edge light SR on {device}, 128² LR x4, batch {batch}: "
          f"{1000 * min(times) / batch:.2f} ms/tile (min of 5; {1000 * min(times):.1f} ms/call)")
PY
cd benchmarks
timeout "$budget" "$py" policies.py --device "$device" --preset "$preset" --size "$size" \
    --tile "$tile" --overlap "$overlap" --sr-batch 16 --threads 4 --prompts "$prompts" \
    --seeds 1 --links "${links[@]}" --no-sim --json "$OUT/policies-$preset-$size.json" \
    2>&1 | tee "$OUT/policies-$preset-$size.log"; rc=${PIPESTATUS[0]}
echo "policies.py exit $rc; results in $OUT"
