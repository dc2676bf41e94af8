"""Per-user cache of converted ONNX models.

Why: converting is cheap for the compact model (~0.1 s) but not free for x4plus (67 MB of
float32 initialisers), and a device should not redo it at every start. Entries are keyed
by the sha256 of the source files plus the converter version, so new weights or a fixed
converter never reuse a stale entry. An entry is written to a temporary file in the same
directory and moved into place with ``os.replace``: a crash, or a source that fails to
parse, can never leave a half-written ``.onnx`` that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .ncnn import ModelFormatError, parse_ncnn

__all__ = ["CONVERTER_VERSION", "cache_dir", "cached_onnx", "source_key"]

#: ONNX metadata keys a .pth conversion sets (see .pth): the model's scale and overlap.
META_SCALE = "hybridsr.scale"
META_OVERLAP = "hybridsr.overlap"

#: Bump when the converter's output changes, so old cache entries are not reused.
CONVERTER_VERSION = "2"


def cache_dir() -> Path:
    """``$HYBRIDSR_CACHE_DIR``, else the platform's per-user cache dir + ``hybridsr``."""
    override = os.environ.get("HYBRIDSR_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "hybridsr" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "hybridsr"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hybridsr"


def source_key(param_bytes: bytes, bin_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"hybridsr-realesrgan-onnx-v{CONVERTER_VERSION}\0".encode())
    for part in (param_bytes, bin_bytes):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def cached_onnx(param: Path, bin_path: Path, stem: str | None = None) -> Path:
    """Path of the ONNX conversion of ``param``/``bin_path``, converting on a miss.

    Raises :class:`~.ncnn.ModelFormatError` for malformed sources; nothing is written then.
    """
    param_bytes = Path(param).read_bytes()
    bin_bytes = Path(bin_path).read_bytes()
    key = source_key(param_bytes, bin_bytes)
    directory = cache_dir() / "realesrgan"
    target = directory / f"{stem or Path(param).stem}-{key[:20]}.onnx"
    if target.is_file():
        return target
    try:
        text = param_bytes.decode("ascii")
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{param}: not an ncnn .param text file ({e})") from None
    model = to_onnx(parse_ncnn(text, bin_bytes), graph_name=stem or Path(param).stem)
    write_atomic(target, model.SerializeToString())
    return target


def to_onnx(net, graph_name: str):
    """The ONNX builder, imported on a cache miss only: importing onnx costs start-up time."""
    from .onnx_export import to_onnx as build

    return build(net, graph_name=graph_name)


def write_atomic(target: Path, data: bytes) -> None:
    """Write via a temp file and `os.replace`: a reader never sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
