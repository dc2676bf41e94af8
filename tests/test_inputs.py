"""Faithful inputs through a real edge on 127.0.0.1: any size, any scale up to the edge's
largest, alpha, greyscale, palette, 16-bit, CMYK, EXIF orientation; animations refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hybridsr.client.cli import main
from hybridsr.imaging.lightsr import LanczosSR, create_backend
from hybridsr.imaging.resample import resize
from hybridsr.sdk import EdgeRefused, HybridClient
from hybridsr.sdk.errors import UnsupportedImage
from hybridsr.sdk.inputs import prepare_image

POLICY = "device-light-all"  # every tile by the device's SR: the pixels are predictable


@pytest.fixture(scope="module")
def rect(photo) -> np.ndarray:
    """64 wide, 48 high: a wrong transpose or crop shows."""
    return np.ascontiguousarray(photo[:48])


@pytest.fixture(scope="module")
def client(edge):
    # Lossless tiles: the tests compare pixels across jobs, and the planner may pick JPEG.
    with HybridClient(edge.url, device_sr="lanczos", benchmark=False,
                      tile_quality="lossless") as c:
        yield c


def _png(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _png16_rgb(array: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_generate_any_size_is_a_crop_of_the_nearest_supported(client):
    odd = client.generate("a lighthouse", width=500, height=333, seed=5, policy=POLICY)
    assert odd.image.size == (500, 333)
    assert odd.report()["size"] == [500, 333]
    assert any("512x352" in note and "500x333" in note for note in odd.notes)
    # The pixels are the centre of the supported size's job, not a resampled picture.
    full = client.generate("a lighthouse", width=512, height=352, seed=5, policy=POLICY)
    assert full.notes == []
    centre = np.asarray(full.image)[9:342, 6:506].astype(int)
    assert np.abs(np.asarray(odd.image).astype(int) - centre).max() <= 1


def test_generate_beyond_the_limit_is_still_refused(client):
    with pytest.raises(EdgeRefused) as info:
        client.generate("x", width=1100, height=64, policy=POLICY)
    assert info.value.code == "bad_size"


@pytest.mark.parametrize("scale", [2, 3, 2.5, 1])
def test_enhance_serves_scales_below_the_edges(client, rect, scale):
    h, w = rect.shape[:2]
    result = client.enhance(rect, scale=scale, policy=POLICY)
    assert result.image.size == (round(w * scale), round(h * scale))
    assert result.plan.scale == 4  # the x4 edge ran at x4...
    x4 = client.enhance(rect, scale=4, policy=POLICY)
    expected = resize(np.asarray(x4.image), *result.image.size)  # ...then resized down
    assert np.abs(np.asarray(result.image).astype(int) - expected.astype(int)).max() <= 1
    assert any(f"x{scale:g}" in note for note in result.notes)


def test_enhance_beyond_the_edges_largest_scale_is_refused(client, rect):
    with pytest.raises(EdgeRefused) as info:
        client.enhance(rect, scale=5, policy=POLICY)
    assert info.value.code == "bad_size"


def test_alpha_is_upscaled_on_the_device_and_reattached(edge, tmp_path, rect):
    alpha = np.zeros(rect.shape[:2], np.uint8)
    alpha[8:40, 12:52] = 255
    alpha[20:28, 24:40] = 128
    path = _write(tmp_path, "rgba.png", _png(Image.fromarray(np.dstack([rect, alpha]))))
    with HybridClient(edge.url, benchmark=False,  # Real-ESRGAN on the device
                      tile_quality="lossless") as client:
        result = client.enhance(path, policy=POLICY)
        plain = client.enhance(rect, policy=POLICY)
    sr_alpha = create_backend("auto").upscale(np.dstack([alpha] * 3), 4).mean(axis=2)
    assert result.image.mode == "RGBA" and result.image.size == (256, 192)
    out = np.asarray(result.image).astype(int)
    assert np.abs(out[..., 3] - sr_alpha).max() <= 1  # the device's SR of the alpha plane
    assert out[0:24, 0:40, 3].max() < 8 and out[48:144, 64:192, 3].min() > 0
    assert np.abs(out[..., :3] - np.asarray(plain.image).astype(int)).max() <= 1  # RGB intact
    assert any("alpha" in note for note in result.notes)


def test_greyscale_comes_back_greyscale(client, tmp_path, rect):
    grey = np.asarray(Image.fromarray(rect).convert("L"))
    path = _write(tmp_path, "grey.png", _png(Image.fromarray(grey)))
    result = client.enhance(path, policy=POLICY)
    assert result.image.mode == "L" and result.image.size == (256, 192)
    expected = LanczosSR().upscale(np.dstack([grey] * 3), 4)[..., 0]
    assert np.abs(np.asarray(result.image).astype(int) - expected).max() <= 2
    assert any("greyscale" in note for note in result.report()["notes"])


def test_palette_with_transparency_becomes_rgba(client, tmp_path, rect):
    indices = np.asarray(Image.fromarray(rect).quantize(15)).copy()
    indices[:, :16] = 15  # a transparent band on the left
    pal = Image.fromarray(indices, mode="P")
    pal.putpalette(Image.fromarray(rect).quantize(15).getpalette()[:45] + [0, 0, 0])
    path = _write(tmp_path, "pal.png", _png(pal, transparency=15))
    result = client.enhance(path, policy=POLICY)
    assert result.image.mode == "RGBA" and result.image.size == (256, 192)
    alpha = np.asarray(result.image)[..., 3]
    assert alpha[:, :56].max() < 8 and alpha[:, 72:].min() > 247
    assert any("palette" in note for note in result.notes)
    opaque = Image.fromarray(rect).quantize(16)
    plain = client.enhance(_write(tmp_path, "pal3.png", _png(opaque)), policy=POLICY)
    assert plain.image.mode == "RGB"
    assert np.array_equal(np.asarray(plain.lr_image), np.asarray(opaque.convert("RGB")))


def test_16_bit_inputs_are_reduced_to_8_bits(client, tmp_path, rect):
    deep = rect.astype(np.uint16) * 256 + 37
    result = client.enhance(_write(tmp_path, "rgb16.png", _png16_rgb(deep)), policy=POLICY)
    lr = np.asarray(result.lr_image).astype(int)
    assert np.abs(lr - deep / 257).max() <= 1
    assert any("16 bits" in note for note in result.notes)
    grey16 = Image.fromarray(deep[..., 1])  # mode I;16
    grey = client.enhance(_write(tmp_path, "grey16.png", _png(grey16)), policy=POLICY)
    assert grey.image.mode == "L"
    assert np.abs(np.asarray(grey.lr_image)[..., 1].astype(int) - deep[..., 1] / 257).max() <= 1
    assert any("16 bits" in note for note in grey.notes)


def test_cmyk_is_converted_to_rgb(client, tmp_path, rect):
    cmyk = Image.fromarray(rect).convert("CMYK")
    path = tmp_path / "cmyk.tiff"
    cmyk.save(path)
    result = client.enhance(path, policy=POLICY)
    assert result.image.mode == "RGB"
    assert np.array_equal(np.asarray(result.lr_image), np.asarray(cmyk.convert("RGB")))
    assert any("CMYK" in note for note in result.notes)


def test_exif_orientation_is_applied(client, tmp_path, rect):
    image = Image.fromarray(rect)  # 64 wide, 48 high... stored; shown rotated 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _write(tmp_path, "rotated.png", _png(image, exif=exif.tobytes()))
    result = client.enhance(path, policy=POLICY)
    assert result.image.size == (48 * 4, 64 * 4)
    assert np.array_equal(np.asarray(result.lr_image), np.rot90(rect, k=-1))
    assert any("orientation 6" in note for note in result.notes)


@pytest.mark.parametrize("kind", ["gif", "tiff"])
def test_animated_or_multi_frame_input_is_a_typed_error(client, tmp_path, rect, kind):
    frames = [Image.fromarray(np.roll(rect, 8 * i, axis=1)) for i in range(3)]
    path = tmp_path / f"many.{kind}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImage, match="3 frames"):
        client.enhance(path, policy=POLICY)
    with pytest.raises(UnsupportedImage, match="3 frames"):
        prepare_image(Image.open(path))


def test_cli_enhance_keeps_alpha_and_refuses_an_animation(edge, tmp_path, rect, capsys):
    alpha = np.full(rect.shape[:2], 255, np.uint8)
    alpha[:, :16] = 0
    src = _write(tmp_path, "in.png", _png(Image.fromarray(np.dstack([rect, alpha]))))
    out = tmp_path / "out.png"
    code = main(["enhance", str(src), "--edge", edge.url, "--scale", "2", "--device-sr",
                 "lanczos", "-q", "-o", str(out), "--report", str(tmp_path / "r.json")])
    assert code == 0
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (128, 96)
        assert np.asarray(im)[:, :24, 3].max() < 8
    assert "x2 served by the edge's x4" in capsys.readouterr().err
    frames = [Image.fromarray(rect), Image.fromarray(rect[::-1].copy())]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code = main(["enhance", str(tmp_path / "anim.gif"), "--edge", edge.url, "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "animated GIF with 2 frames" in err and len(err.splitlines()) == 1


def test_local_upscale_keeps_alpha_and_greyscale(tmp_path, rect):
    alpha = np.full(rect.shape[:2], 255, np.uint8)
    alpha[:, :16] = 0
    grey = np.asarray(Image.fromarray(rect).convert("L"))
    src = _write(tmp_path, "la.png", _png(Image.fromarray(np.dstack([grey, alpha]))))
    out = tmp_path / "out.png"
    assert main(["upscale", str(src), "-o", str(out), "--model", "lanczos", "--scale", "2",
                 "-q"]) == 0
    with Image.open(out) as im:
        assert im.mode == "LA" and im.size == (128, 96)
        pixels = np.asarray(im)
    assert pixels[:, :24, 1].max() < 8 and pixels[:, 40:, 1].min() > 247
    expected = LanczosSR().upscale(np.dstack([grey] * 3), 2)[..., 0]
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 2


def test_a_camera_jpeg_with_a_preview_is_not_refused(client, tmp_path, rect):
    """Cameras write MPO JPEGs (primary image + previews): that is one picture, not two."""
    path = tmp_path / "camera.mpo"
    primary, preview = Image.fromarray(rect), Image.fromarray(rect[::2, ::2].copy())
    primary.save(path, "MPO", save_all=True, append_images=[preview], quality=95)
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
        expected = np.asarray(im.convert("RGB"))
    result = client.enhance(path, policy=POLICY)
    assert result.image.size == (256, 192)
    assert np.array_equal(np.asarray(result.lr_image), expected)
    assert any("MPO" in note for note in result.notes)
