#!/usr/bin/env bash
# The device SDK on an emulated Raspberry Pi (arm64 Debian bookworm under qemu-user), talking
# to an x86 edge on 127.0.0.1. Builds the root file system once (cached outside the repo),
# installs the SDK there with pip, then times `hybridsr probe`, `upscale` and `generate`.
#
#   sudo scripts/pi_emulated.sh            # build if needed, install, run, print timings
#   sudo scripts/pi_emulated.sh --build    # only build the cached root file system
#   sudo scripts/pi_emulated.sh --install  # build if needed and install the SDK, no jobs
#
# Needs root (chroot, mounts), `apt-get install mmdebstrap qemu-user-static`, and the
# project's venv (.venv, `make install`) for the edge. Emulated: far slower than a real Pi.
# See docs/raspberry-pi.md.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${HYBRIDSR_PI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridsr/pi}"
ROOTFS="$CACHE/rootfs-bookworm-arm64"
QEMU_CPU="${QEMU_CPU:-cortex-a72}"  # Raspberry Pi 4; cortex-a76 for a Pi 5
PORT="${HYBRIDSR_PI_PORT:-18765}"
EDGE_PY="${EDGE_PY:-$REPO/.venv/bin/python}"
export QEMU_CPU

say() { printf '[pi] %s\n' "$*" >&2; }

need_tools() {
  [ "$(id -u)" = 0 ] || { say "run as root (chroot and mounts)"; exit 1; }
  for tool in mmdebstrap qemu-aarch64-static unshare; do
    command -v "$tool" >/dev/null || { say "missing $tool: apt-get install -y mmdebstrap qemu-user-static"; exit 1; }
  done
}

# qemu-user runs arm64 binaries once the kernel knows to hand them to it (binfmt_misc).
register_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc
  [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir"
  if [ ! -e "$dir/qemu-aarch64" ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > "$dir/register"
  fi
}

build_rootfs() {
  if [ -e "$ROOTFS/.hybridsr-built" ]; then
    say "root file system cached in $ROOTFS"
    return
  fi
  say "building arm64 bookworm in $ROOTFS (minutes, once)"
  rm -rf "$ROOTFS"
  mkdir -p "$CACHE"
  local t0=$SECONDS
  mmdebstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" http://deb.debian.org/debian >&2
  touch "$ROOTFS/.hybridsr-built"
  say "root file system built in $((SECONDS - t0)) s"
}

# An ARM cpuinfo: qemu-user passes the host's x86 /proc/cpuinfo through, and onnxruntime's CPU
# detection crashes on it (SIGSEGV). A real Pi has its own; this one describes the emulated core.
write_cpuinfo() {
  local part=0xd08 model="Raspberry Pi 4 Model B (emulated)"
  [ "$QEMU_CPU" = cortex-a76 ] && { part=0xd0b; model="Raspberry Pi 5 Model B (emulated)"; }
  local n i
  n=$(nproc)
  : > "$CACHE/cpuinfo"
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
    printf 'CPU part\t: %s\nCPU revision\t: 3\n\n' "$part"
  done >> "$CACHE/cpuinfo"
  printf 'Hardware\t: BCM2835\nModel\t\t: %s\n' "$model" >> "$CACHE/cpuinfo"
}

# Everything below runs in a private mount namespace: the mounts vanish when it exits.
# pip inside needs what pip needs here: DNS, the CA bundle, pip's config and local wheel folders.
CHROOT_SETUP='
set -euo pipefail
R="$ROOTFS"
mount -t proc proc "$R/proc"
mount --bind "$CACHE/cpuinfo" "$R/proc/cpuinfo"
mount --rbind /dev "$R/dev"
mount -t sysfs -o ro sysfs "$R/sys"  # without it onnxruntime warns it cannot count the cores
mkdir -p "$R/tmp" "$R/wheels" "$R/work" "$CACHE/work"
mount -t tmpfs tmpfs "$R/tmp"
mount --bind "$CACHE/wheels" "$R/wheels"
mount --bind "$CACHE/work" "$R/work"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
cp -L /etc/hosts "$R/etc/hosts"
for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf /root/.config/pip/pip.conf; do
  if [ -e "$f" ]; then mkdir -p "$R$(dirname "$f")"; cp -L "$f" "$R$f"; fi
done
for d in /opt/wheels /opt/pypi /opt/pypi-more; do
  if [ -d "$d" ]; then mkdir -p "$R$d"; mount --bind -o ro "$d" "$R$d"; fi
done
'

in_chroot() {  # in_chroot 'shell commands' — runs them as root inside the arm64 system
  ROOTFS="$ROOTFS" CACHE="$CACHE" unshare --mount --propagation private bash -c \
    "$CHROOT_SETUP"'
chroot "$R" /usr/bin/env -i HOME=/root PATH=/opt/hybridsr/bin:/usr/bin:/bin \
  QEMU_CPU="$QEMU_CPU" HF_HUB_OFFLINE=1 $(env | grep -E "^PIP_" | tr "\n" " ") \
  /bin/bash -c "$1"' _ "$1"
}

install_sdk() {
  say "building the hybridsr wheel (pure Python) on the host"
  rm -rf "$CACHE/wheels"
  mkdir -p "$CACHE/wheels"
  # From a copy: building in place would leave build/ and *.egg-info in the checkout.
  local src
  src=$(mktemp -d)
  tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build -cf - . | tar -C "$src" -xf -
  "$EDGE_PY" -m pip wheel -q --no-deps --no-build-isolation "$src" -w "$CACHE/wheels" >&2
  rm -rf "$src"
  local t0=$SECONDS
  in_chroot '
set -e
[ -x /opt/hybridsr/bin/python ] || python3 -m venv /opt/hybridsr
pip install -q --upgrade --force-reinstall --no-deps /wheels/hybridsr-*.whl
pip install -q /wheels/hybridsr-*.whl
python -c "import platform, onnxruntime, hybridsr.sdk; print(\"[pi] arm64 python\", platform.python_version(), platform.machine(), \"onnxruntime\", onnxruntime.__version__)" >&2
'
  say "device SDK installed in $((SECONDS - t0)) s"
}

EDGE_PID=""
start_edge() {
  say "starting the x86 edge (tiny preset) on 127.0.0.1:$PORT"
  HF_HUB_OFFLINE=1 "$EDGE_PY" -m hybridsr.server serve --preset tiny --host 127.0.0.1 \
    --port "$PORT" --log-level WARNING > "$CACHE/edge.log" 2>&1 &
  EDGE_PID=$!
  trap 'kill "$EDGE_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 240); do
    if "$EDGE_PY" - "$PORT" <<'EOF' 2>/dev/null; then return; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()
EOF
    kill -0 "$EDGE_PID" 2>/dev/null || { cat "$CACHE/edge.log" >&2; say "edge died"; exit 1; }
    sleep 0.5
  done
  say "edge did not start"; exit 1
}

run_jobs() {
  # A real photograph (scikit-image's astronaut at 128x128) when the dev extra is there.
  "$EDGE_PY" - "$CACHE/work/photo128.png" <<'PY'
import sys
import numpy as np
from PIL import Image
try:
    from skimage import data
    image = Image.fromarray(data.astronaut()).resize((128, 128), Image.Resampling.LANCZOS)
except ImportError:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (128, 128, 3), np.uint8))
image.save(sys.argv[1])
PY
  cp "$REPO/scripts/pi_jobs.sh" "$CACHE/work/"
  in_chroot "bash /work/pi_jobs.sh $PORT"
  say "outputs in $CACHE/work: upscaled.png generated.png enhanced.png"
}

main() {
  need_tools
  register_binfmt
  build_rootfs
  [ "${1:-}" = --build ] && exit 0
  write_cpuinfo
  mkdir -p "$CACHE/work"
  install_sdk
  [ "${1:-}" = --install ] && exit 0
  start_edge
  run_jobs
}

main "$@"
