"""The demo server under hostile input: memory bounded before decoding, deep images
converted without whole-image float64 copies, few decodes at once, and --host URLs that answer."""
from __future__ import annotations

import io
import json
import struct
import threading
import time
import tracemalloc
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

import demo.images
from demo.images import ImageError, decode_upload


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_16bit_png(side: int) -> bytes:
    """A valid all-black 16-bit grayscale PNG of side x side pixels, compressed row by row (small file)."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 2 * side)  # filter byte + 2 bytes per pixel
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_a_small_file_that_decodes_huge_is_refused_before_decoding():
    data = blank_16bit_png(7745)  # the case: 16-bit 7745 x 7745
    assert len(data) < 200_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageError, match=r"7745 x 7745 pixels in mode I;16: 114 MiB decoded, more than"):
            decode_upload(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0 and peak < 20 * 2**20


def test_16bit_images_are_stretched_without_a_float64_copy():
    rng = np.random.default_rng(3)
    deep = (rng.integers(1000, 50000, size=(1500, 1000))).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG", compress_level=1)
    tracemalloc.start()
    try:
        gray = decode_upload(buffer.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    low, high = float(deep.min()), float(deep.max())  # the same stretch, in plain float64 numpy
    expected = np.clip(np.round((deep.astype(np.float64) - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    assert np.array_equal(gray, expected)
    pixels = deep.size
    # the uint16 pixels (2 B), the uint8 result (1 B) and row blocks; a whole float64 copy alone is 8 B
    assert peak < 4 * pixels + 8 * 2**20, f"peak {peak / pixels:.1f} bytes per pixel"


def test_at_most_two_images_are_decoded_at_once(monkeypatch):
    gray = np.random.default_rng(0).integers(0, 255, size=(300, 200), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    data = buffer.getvalue()
    lock, now, peak = threading.Lock(), [0], [0]
    original_load = Image.Image.load

    def slow_load(self):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.1)
        try:
            return original_load(self)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(Image.Image, "load", slow_load)
    threads = [threading.Thread(target=decode_upload, args=(data,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak[0] <= demo.images.MAX_CONCURRENT_DECODES == 2


@pytest.mark.parametrize("host, allow_remote", [("127.0.0.2", False), ("0.0.0.0", True)])
def test_the_printed_url_answers(host, allow_remote):
    from demo.server import DemoApp, create_server

    class NoModel:  # the routes used here never predict
        num_keypoints, model_name, source, untrained, size_rc = 68, "none", "none", True, (128, 64)

    server = create_server(DemoApp(NoModel()), host, 0, allow_remote=allow_remote)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = f"?token={server.token}" if allow_remote else ""
        with urllib.request.urlopen(f"{server.origin}/api/info{token}", timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())["num_keypoints"] == 68
    finally:
        server.shutdown()
        server.server_close()
