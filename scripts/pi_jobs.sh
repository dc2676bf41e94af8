#!/usr/bin/env bash
# Runs INSIDE the emulated arm64 system (scripts/pi_emulated.sh copies it there): the device
# SDK's commands against the x86 edge on 127.0.0.1:$1, each timed. Files in /work: inputs in,
# outputs out.
set -euo pipefail
EDGE="ws://127.0.0.1:$1"
cd /tmp
t() {  # run a command, then print its wall time
  local s e
  s=$(date +%s%N)
  "$@"
  e=$(date +%s%N)
  printf '[pi] TIME %7.1f s: %s\n' "$(( (e - s) / 1000000 ))e-3" "$*" >&2
}
model=$(grep -m1 Model /proc/cpuinfo | cut -f2- -d: || true)
echo "[pi] $(uname -m), $(nproc) cores, QEMU_CPU=${QEMU_CPU:-?},$model, $(python3 -V)" >&2
rm -f /root/.cache/hybridsr/device-profile.json  # start as a fresh device
t hybridsr probe --no-benchmark > /dev/null
t hybridsr probe > /tmp/probe.json
t hybridsr probe > /dev/null
t hybridsr upscale /work/photo128.png -o /work/upscaled.png --model realesr-animevideov3 -q
t hybridsr upscale /work/photo128.png -o /tmp/upscaled-fast.png --precision fast -q
t hybridsr generate "a lighthouse at dusk" --edge "$EDGE" --width 500 --height 333 --seed 1 \
  -q -o /work/generated.png --report /tmp/gen.json
t env HYBRIDSR_PROFILE_CACHE=off hybridsr generate "a lighthouse at dusk" --edge "$EDGE" \
  --width 500 --height 333 --seed 1 -q -o /tmp/generated-uncached.png
t hybridsr enhance /work/photo128.png --edge "$EDGE" --scale 2 -q -o /work/enhanced.png \
  --report /tmp/enh.json
python3 - <<'PY' >&2
import json
p = json.load(open("/tmp/probe.json"))
print("[pi] probe:", {k: p[k] for k in ("platform", "cores", "sr_backend", "sr_ms_per_lr_pixel")})
for name in ("gen", "enh"):
    r = json.load(open(f"/tmp/{name}.json"))
    print(f"[pi] {name} report: size", r["size"], "timings", r["timings"], "notes", r["notes"])
PY
