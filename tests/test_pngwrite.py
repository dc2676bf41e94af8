"""The PNG encoder (protocol/png.py) and the upscaler's writer: every mode reads back pixel
for pixel with Pillow, through ISA-L's deflate and through zlib's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridsr.imaging.pngwrite import write_png
from hybridsr.protocol import decode_image, encode_image
from hybridsr.protocol.png import encode_png, zlib_stream


def _image(mode: str, h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if mode in ("L", "LA"):
        image = Image.fromarray(pixels[..., 0])
        if mode == "LA":
            image.putalpha(Image.fromarray(pixels[..., 1]))
        return image
    return Image.fromarray(pixels)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (37, 53)])
def test_png_reads_back_exactly(tmp_path, mode, shape):
    image = _image(mode, *shape, seed=len(mode) * 100 + shape[1])
    write_png(image, tmp_path / "x.png")
    back = Image.open(tmp_path / "x.png")
    assert back.format == "PNG" and back.mode == mode
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_a_photo_compresses_about_as_well_as_pillow(tmp_path):
    """The average filter is what keeps the file small: within 5% of Pillow's level 1."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.BICUBIC)
    write_png(image, tmp_path / "ours.png")
    image.save(tmp_path / "pillow.png", compress_level=1)
    ours, pillow = ((tmp_path / n).stat().st_size for n in ("ours.png", "pillow.png"))
    assert ours <= 1.05 * pillow


def test_other_modes_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        write_png(Image.new("P", (4, 4)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("threads", [2, 3])
def test_pieces_deflated_in_parallel_make_one_valid_stream(tmp_path, threads):
    import zlib

    data = np.random.default_rng(threads).integers(0, 64, 3 << 20, dtype=np.uint8).tobytes()
    stream = zlib_stream(data, 1, threads)
    assert stream != zlib.compress(data, 1)  # several pieces, each with its own window
    assert zlib.decompress(stream) == data  # header, pieces and Adler-32 agree
    import io

    pixels = np.asarray(_image("RGB", 1024, 1024, seed=threads))  # 3 MB filtered: in pieces
    png = encode_png(pixels, use_isal=False)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)


@pytest.mark.parametrize("use_isal", [True, False])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_both_deflates_read_back_exactly(channels, use_isal):
    import io

    if use_isal:
        pytest.importorskip("isal")  # no wheel for this platform: zlib only
    pixels = np.random.default_rng(channels).integers(0, 256, (61, 67, channels), np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode_png(pixels, use_isal=use_isal))))
    assert np.array_equal(back.reshape(pixels.shape), pixels)


def test_png_tiles_on_the_wire_decode_exactly():
    from synthetic import photo_like

    tile = photo_like(96, 80, seed=3)
    blob = encode_image(tile, "png")
    assert blob.data.startswith(b"\x89PNG") and np.array_equal(decode_image(blob), tile)


def test_the_wire_encoder_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="at least one pixel"):
        encode_png(np.zeros((0, 5, 3), np.uint8))
