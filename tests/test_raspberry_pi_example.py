"""examples/raspberry_pi/enhance_folder.py on x86 with a real edge: pictures go through the
edge while it is there, are done on the device alone when it is not, and go back to the
edge once it returns; a picture it cannot take is refused once, in a file."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hybridsr.imaging.lightsr import LanczosSR

EXAMPLE = Path(__file__).parent.parent / "examples" / "raspberry_pi" / "enhance_folder.py"
spec = importlib.util.spec_from_file_location("enhance_folder", EXAMPLE)
enhance_folder = importlib.util.module_from_spec(spec)
sys.modules["enhance_folder"] = enhance_folder  # dataclasses look their module up there
spec.loader.exec_module(enhance_folder)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}"


def _drop(folder: Path, name: str, image: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(image).save(path)
    old = time.time() - 5
    os.utime(path, (old, old))  # settled: not being written any more
    return path


def test_edge_then_alone_then_edge_again(edge, tmp_path, photo):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    rgba = np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])
    _drop(inbox, "a.png", rgba)
    enhancer = enhance_folder.FolderEnhancer(inbox, outbox, edge.url, scale=2,
                                             device_sr=LanczosSR(), retry_s=0.0)
    try:
        (first,) = enhancer.run_once()
        assert first.where == "edge"
        with Image.open(outbox / "a_x2.png") as im:
            assert im.size == (128, 128) and im.mode == "RGBA"
        assert json.loads((outbox / "a_x2.json").read_text())["where"] == "edge"
        assert enhancer.run_once() == []  # done pictures are not redone

        enhancer.edge = _closed_port_url()  # the edge goes away
        enhancer._drop_client()
        _drop(inbox, "b.png", photo)
        (alone,) = enhancer.run_once()
        assert alone.where == "device" and any("edge away" in n for n in alone.notes)
        with Image.open(outbox / "b_x2.png") as im:
            out = np.asarray(im).astype(int)
        expected = np.asarray(Image.fromarray(LanczosSR().upscale(photo, 2)))
        assert out.shape == (128, 128, 3) and np.abs(out - expected).max() <= 1

        enhancer.edge = edge.url  # it is back: the next picture goes to it again
        _drop(inbox, "c.png", photo)
        (back,) = enhancer.run_once()
        assert back.where == "edge"
    finally:
        enhancer.close()


def test_a_picture_it_cannot_take_is_refused_once(edge, tmp_path, photo):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1].copy())]
    frames[0].save(inbox / "anim.gif", save_all=True, append_images=frames[1:])
    old = time.time() - 5
    os.utime(inbox / "anim.gif", (old, old))
    fresh = inbox / "writing.png"
    Image.fromarray(photo).save(fresh)  # just written: left for the next pass
    enhancer = enhance_folder.FolderEnhancer(inbox, outbox, edge.url, device_sr=LanczosSR(),
                                             settle_s=3.0)
    try:
        (outcome,) = enhancer.run_once()
        assert outcome.where == "rejected" and "2 frames" in outcome.notes[0]
        assert "2 frames" in (outbox / "anim.gif.error.txt").read_text()
        assert enhancer.run_once() == []
    finally:
        enhancer.close()
