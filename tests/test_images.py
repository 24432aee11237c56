"""read_image: every common file variant -> uint8 RGB, and clear errors for bad files."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ipcgan_jax.data.images import ImageReadError, read_image


def _blocks(height=48, width=64, seed=0):
    """Large flat colour blocks, so JPEG loss stays small away from the edges."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((height // 3, width // 4, 1), dtype=np.uint8))


def write_png16_rgb(path, rgb16):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_jpeg_matches_plain_decode(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(_blocks()).save(path, quality=95)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")))


def test_png_alpha_is_composited_on_black(tmp_path):
    rgb = _blocks()
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
    expected = rgb.astype(np.float64) * alpha[:, :, None] / 255.0
    image = read_image(tmp_path / "a.png")
    assert np.abs(image.astype(np.float64) - expected).max() <= 1.0
    assert image[:, 0].max() == 0  # fully transparent column is black


def test_palette_with_transparent_index_is_black_there(tmp_path):
    indices = np.zeros((10, 10), dtype=np.uint8)
    indices[:, 5:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.save(tmp_path / "p.png", transparency=0)
    result = read_image(tmp_path / "p.png")
    assert result[:, :5].max() == 0
    np.testing.assert_array_equal(result[:, 5:], np.broadcast_to([0, 255, 0], (10, 5, 3)))


def test_grayscale_gives_three_equal_channels(tmp_path):
    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(gray.astype(np.uint8), mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_cmyk_jpeg_gives_ink_colours(tmp_path):
    cmyk = np.zeros((32, 96, 4), dtype=np.uint8)
    cmyk[:, 32:64, 0] = 255  # cyan ink
    cmyk[:, 64:, 3] = 255  # black ink
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    image = read_image(tmp_path / "c.jpg").astype(int)
    assert np.abs(image[8:24, 8:24] - [255, 255, 255]).max() < 12  # no ink: white
    assert np.abs(image[8:24, 40:56] - [0, 255, 255]).max() < 12
    assert np.abs(image[8:24, 72:88] - [0, 0, 0]).max() < 12


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    expected = np.round(values.astype(np.float64) * 255 / 65535)
    np.testing.assert_array_equal(image[:, :, 0], expected)
    np.testing.assert_array_equal(image[:, :, 2], expected)


def test_16_bit_rgb_png(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, size=(6, 7, 3)).astype(np.uint16)
    write_png16_rgb(tmp_path / "c16.png", rgb16)
    image = read_image(tmp_path / "c16.png")
    assert image.shape == (6, 7, 3)
    assert np.abs(image - rgb16.astype(np.float64) * 255 / 65535).max() <= 1.0


def test_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((40, 60, 3), dtype=np.uint8)
    upright[:20, :30] = 255  # top-left quadrant white
    # Orientation 6 = "rotate 90 degrees clockwise to display": store it turned the other way.
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 4


def test_truncated_jpeg_raises_naming_file(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_blocks(96, 128)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not a picture\n" * 10, "not a recognised image"),
    ],
)
def test_bad_files_raise(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path)


def test_corrupt_png_data_raises(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(_blocks()).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\x00" * 32  # garble the compressed stream
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")


def test_folders_devices_and_32_bit_integers_are_refused_saying_what_they_are(tmp_path):
    with pytest.raises(ImageReadError, match="a folder, not an image file"):
        read_image(tmp_path)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo)
    # 32-bit integer pixels (TIFF mode "I"): values 0..255 here, but nothing says so; read
    # as 16-bit they came out black and the photo was then reported as faceless.
    Image.fromarray(np.full((8, 8), 200, np.int32)).save(tmp_path / "int32.tif")
    assert Image.open(tmp_path / "int32.tif").mode == "I"
    with pytest.raises(ImageReadError, match="unsupported pixel format 'I'"):
        read_image(tmp_path / "int32.tif")
