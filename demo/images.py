"""Uploaded images in, display images out, and the bundled synthetic examples. All in memory.

Uploads are never written to disk: ``decode_upload`` reads the bytes it is given and returns the
grayscale pixels the model and the page use, so that "original pixels" mean the same thing for both
(EXIF orientation applied, 16-bit images scaled to 8 bits).
"""
from __future__ import annotations

import io
import threading
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "decode_upload", "encode_png", "ExampleImages", "MAX_PIXELS", "MAX_DECODED_BYTES",
           "MAX_CONCURRENT_DECODES", "MIN_SIDE", "decoded_bytes", "browser_shows_as_is"]

MAX_PIXELS = 60_000_000  # the largest AASCE image has 5.4 million; beyond this is not an X-ray we expect
# What Pillow's decoded pixels may occupy (pixels x bytes per pixel of the file's mode), checked from the
# header before anything is decoded: a 113 kB PNG can hold a 16-bit 7745 x 7745 image (114 MiB decoded).
MAX_DECODED_BYTES = 100 * 2**20
MAX_CONCURRENT_DECODES = 2  # more at once only multiply the memory peak on a 2-core machine
MIN_SIDE = 32  # pixels; smaller images cannot hold 17 vertebrae
CONVERT_ROWS = 256  # deep images are scaled to 8 bits this many rows at a time (bounded float32 scratch)
# bytes per pixel of Pillow's in-memory storage, by mode (multi-band modes are stored as 4 bytes)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
                    **{m: 4 for m in ("LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
                                      "HSV", "I", "F")}}
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_decode_slots = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)
_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


class ImageError(ValueError):
    """The upload is not an image the tool can use; the message says why, for a person."""


def _format_of(data: bytes) -> str:
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    head = data[:8].hex(" ") if data else "nothing"
    raise ImageError(f"this file is not a JPEG or PNG image (it starts with {head}); open an X-ray saved "
                     f"as .jpg or .png")


def decoded_bytes(mode: str, cols: int, rows: int) -> int:
    """Bytes Pillow needs for the decoded pixels of an image of this mode and size (from the header)."""
    if mode not in _BYTES_PER_PIXEL:
        raise ImageError(f"unsupported image mode {mode!r} (expected grayscale, RGB or 16-bit grayscale)")
    return _BYTES_PER_PIXEL[mode] * cols * rows


def stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """A 16-bit / 32-bit / float image stretched from its min..max to 0..255 (round half to even).

    Works on blocks of CONVERT_ROWS rows, so the extra memory is the uint8 result plus one float64
    block, never a float64 copy of the whole image (8 bytes per pixel: 480 MB for 7745 x 7745).
    """
    low, high = float(pixels.min()), float(pixels.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ImageError("the image holds NaN or infinite pixel values")
    out = np.empty(pixels.shape, dtype=np.uint8)
    if high <= low:
        out.fill(0)
        return out
    scale = 255.0 / (high - low)
    for start in range(0, pixels.shape[0], CONVERT_ROWS):
        block = pixels[start:start + CONVERT_ROWS].astype(np.float64)
        block -= low
        block *= scale
        np.rint(block, out=block)
        np.clip(block, 0, 255, out=block)
        out[start:start + CONVERT_ROWS] = block
    return out


def _to_gray_uint8(image: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> 2-D uint8; deep images are stretched from their min..max to 0..255."""
    if image.mode in _DEEP_MODES:
        return stretch_to_uint8(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent = black, as film
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def decode_upload(data: bytes) -> np.ndarray:
    """JPEG or PNG bytes -> uint8 (rows, cols) grayscale, EXIF orientation applied.

    Raises ImageError naming the problem: not a JPEG/PNG, damaged, too large or too small.
    """
    if not data:
        raise ImageError("the uploaded file is empty")
    kind = _format_of(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            cols, rows = image.size
            if rows * cols > MAX_PIXELS:
                raise ImageError(f"the image is {cols} x {rows} pixels; the tool accepts at most "
                                 f"{MAX_PIXELS / 1e6:.0f} million pixels")
            size = decoded_bytes(image.mode, cols, rows)
            if size > MAX_DECODED_BYTES:
                raise ImageError(f"the image is {cols} x {rows} pixels in mode {image.mode}: {size / 2**20:.0f} MiB "
                                 f"decoded, more than the {MAX_DECODED_BYTES / 2**20:.0f} MiB the tool accepts")
            with _decode_slots:
                image.load()
                image = ImageOps.exif_transpose(image)
                gray = _to_gray_uint8(image)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise ImageError(f"the {kind} file could not be decoded (damaged or truncated?): {exc}") from None
    if min(gray.shape) < MIN_SIDE:
        raise ImageError(f"the image is only {gray.shape[1]} x {gray.shape[0]} pixels; an X-ray needs at "
                         f"least {MIN_SIDE} pixels on each side")
    return gray


def encode_png(gray: np.ndarray) -> bytes:
    """Lossless PNG of a grayscale image (fast compression: it is sent once, over loopback)."""
    ok, buffer = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


_BROWSER_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
_BROWSER_MODES = ("L", "RGB")  # 8 bits per sample, no transparency: the browser draws what the tool decodes


def browser_shows_as_is(data: bytes) -> str | None:
    """The Content-Type to send ``data`` (a JPEG or PNG file) to the page unchanged, or None when the
    browser would draw other pixels than ``decode_upload`` gives the model: 16-bit or float images
    (the tool stretches them), transparency (the tool puts it on black), palettes, CMYK, or an EXIF
    rotation (applied by the tool). Reads the header only. An 8-bit grayscale or RGB file is served as
    it is: a 140 kB JPEG stays 140 kB instead of a lossless PNG of several MB."""
    try:
        kind = _format_of(data)
        with Image.open(io.BytesIO(data)) as image:
            if image.format != kind or image.mode not in _BROWSER_MODES or "transparency" in image.info:
                return None
            if image.getexif().get(0x0112, 1) != 1:  # Orientation
                return None
    except (ImageError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return _BROWSER_TYPES[kind]


class ExampleImages:
    """Synthetic X-rays from ``dataset.synthetic`` (a pure function of seed and index), made on first
    use and kept in memory, so the repository ships no image files."""

    def __init__(self, count: int = 6, seed: int = 0, split: str = "test"):
        self.count, self.seed, self.split = count, seed, split
        self._cache: dict[int, tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return [f"Synthetic {i + 1}" for i in range(self.count)]

    def get(self, index: int) -> tuple[str, np.ndarray]:
        """(file name, uint8 grayscale) of example ``index``; IndexError outside 0..count-1."""
        if not 0 <= index < self.count:
            raise IndexError(f"there are {self.count} examples (0..{self.count - 1}), not {index}")
        with self._lock:
            if index not in self._cache:
                from dataset.synthetic import make_sample

                sample = make_sample(self.seed, self.split, index)
                self._cache[index] = (sample.name, sample.image)
            return self._cache[index]
