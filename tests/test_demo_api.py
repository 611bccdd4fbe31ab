"""The annotation tool without a browser: the refine logic (demo.session), the upload and form parsing,
and the HTTP API of demo.server spoken to with urllib over a real loopback socket.

A tiny random network (HRNet width 8, OCR 16, 128x64 input) stands in for the trained model: the
contract under test (fixed points stay exactly, the others are re-predicted, exports round-trip, bad
input is refused with a message) does not depend on the weights.
"""
from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from demo.images import ExampleImages, ImageError, decode_upload
from demo.predictor import KeypointPredictor
from demo.server import DemoApp, create_server, parse_multipart
from demo.session import AnnotationSession, InputError, NothingToUndo, keypoint_names, parse_fixed
from dataset.synthetic import make_sample

K = 68
TINY = ["Dataset.image_size=[128,64]", "Dataset.heatmap_std=1.875", "Dataset.subpixel_decoding_patch_size=5",
        "Model.width=8", "Model.ocr_width=16", "Model.small=true"]
UPLOAD_LIMIT = 400_000  # bytes; small so that the "too large" case is cheap


def tiny_checkpoint(path):
    """A checkpoint in our format (weights + validated config) of a tiny random network."""
    from model import build_model, save_checkpoint
    from util import load_config

    config = load_config("config/quick.yaml", TINY)
    torch.manual_seed(0)
    save_checkpoint(path, build_model(config), epoch=0, metric=0.0, config=config)
    return path


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("demo_model") / "tiny.pth")
    return KeypointPredictor.from_checkpoint(path)


@pytest.fixture(scope="module")
def xray():
    """A synthetic X-ray (uint8 gray) at 0.4x the real size, with its true points."""
    sample = make_sample(0, "test", 1, scale=0.4)
    return sample.image, sample.points_xy.astype(np.float64)


def encode(gray: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    image = Image.fromarray(gray)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# the refine logic, without HTTP
# --------------------------------------------------------------------------------------------------
def test_refine_keeps_fixed_points_exactly_and_repredicts_the_others(predictor, xray):
    gray, true_xy = xray
    session = AnnotationSession("s", "x.jpg", gray, predictor)
    first = session.current
    assert first.points_xy.shape == (K, 2) and first.fixed_xy == {}
    fixed = {26: (float(true_xy[26, 0]) + 0.123456789, float(true_xy[26, 1]))}
    second = session.refine(fixed)
    assert tuple(second.points_xy[26]) == fixed[26]  # exactly, not merely close
    others = np.delete(np.arange(K), 26)
    assert np.abs(second.points_xy[others] - first.points_xy[others]).max() > 0, "the click changed nothing"
    third = session.refine({**fixed, 3: (10.5, 20.25)})
    assert tuple(third.points_xy[26]) == fixed[26] and tuple(third.points_xy[3]) == (10.5, 20.25)
    assert 26 not in third.least_confident() and 3 not in third.least_confident()
    assert len(third.least_confident()) == 5


def test_undo_and_reset(predictor, xray):
    gray, _ = xray
    session = AnnotationSession("s", "x.jpg", gray, predictor)
    first = session.current.points_xy.copy()
    with pytest.raises(NothingToUndo):
        session.undo()
    session.refine({0: (5.0, 6.0)})
    session.refine({0: (5.0, 6.0), 1: (7.0, 8.0)})
    assert session.undo().fixed_xy == {0: (5.0, 6.0)}
    reset = session.reset()
    assert reset.fixed_xy == {} and np.array_equal(reset.points_xy, first)
    assert session.undo().fixed_xy == {0: (5.0, 6.0)}  # reset itself is undoable


def test_old_states_drop_their_heatmaps_and_undo_still_refines(predictor, xray, monkeypatch):
    import demo.session

    monkeypatch.setattr(demo.session, "PROBS_BUDGET_BYTES", 1)  # keep heatmaps of the last 2 states only
    session = AnnotationSession("s", "x.jpg", xray[0], predictor)
    fixed = {}
    for n in range(4):
        fixed[n] = (10.0 + n, 20.0)
        session.refine(dict(fixed))
    assert session.history[0].probs is not None  # the first prediction: reset returns to it
    assert [s.probs is None for s in session.history[1:]] == [True, True, False, False]
    session.undo()
    session.undo()
    assert session.current.probs is None and session.current.fixed_xy == {0: (10.0, 20.0), 1: (11.0, 20.0)}
    state = session.refine({0: (10.0, 20.0), 1: (11.0, 20.0), 9: (30.0, 40.0)})
    assert tuple(state.points_xy[9]) == (30.0, 40.0) and state.probs is not None


@pytest.mark.parametrize("fixed, message", [
    ([], "must be an object"),
    ({"68": [1, 1]}, "not a point index"),
    ({"-1": [1, 1]}, "not a point index"),
    ({"01": [1, 1]}, "not a point index"),
    ({"x": [1, 1]}, "not a point index"),
    ({"3": [1]}, "two finite numbers"),
    ({"3": [1, "2"]}, "two finite numbers"),
    ({"3": [1, True]}, "two finite numbers"),
    ({"3": [float("nan"), 1]}, "two finite numbers"),
    ({"3": [float("inf"), 1]}, "two finite numbers"),
    ({"3": [101, 5]}, "outside"),
    ({"3": [5, -0.5]}, "outside"),
])
def test_parse_fixed_refuses_bad_input_with_a_message(fixed, message):
    with pytest.raises(InputError, match=message):
        parse_fixed(fixed, K, width=100, height=200)


def test_parse_fixed_keeps_values_exactly():
    assert parse_fixed({"7": [0.1, 200], "0": [100, 0]}, K, 100, 200) == {0: (100.0, 0.0), 7: (0.1, 200.0)}


def test_keypoint_names_follow_the_aasce_order():
    names = keypoint_names(K)
    assert names[:4] == ["T1 top-left", "T1 top-right", "T1 bottom-left", "T1 bottom-right"]
    assert names[-1] == "L5 bottom-right" and names[4 * 12] == "L1 top-left"


# --------------------------------------------------------------------------------------------------
# uploads and forms
# --------------------------------------------------------------------------------------------------
def test_decode_upload_reads_jpeg_png_16bit_and_rgba(xray):
    gray, _ = xray
    assert decode_upload(encode(gray, "PNG")).tolist() == gray.tolist()
    assert decode_upload(encode(gray, "JPEG")).shape == gray.shape
    deep = Image.fromarray(gray.astype(np.uint16) * 200)  # 16-bit PNG, values up to 51000
    buffer = io.BytesIO()
    deep.save(buffer, format="PNG")
    out = decode_upload(buffer.getvalue())
    assert out.dtype == np.uint8 and out.shape == gray.shape and out.max() == 255
    assert decode_upload(encode(gray, "PNG", "RGBA")).shape == gray.shape


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"%PDF-1.4 not an image", "not a JPEG or PNG"),
    (b"GIF89a....", "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "could not be decoded"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "could not be decoded"),
])
def test_decode_upload_refuses_what_is_not_an_image(data, message):
    with pytest.raises(ImageError, match=message):
        decode_upload(data)


def test_decode_upload_refuses_tiny_images():
    with pytest.raises(ImageError, match="at least"):
        decode_upload(encode(np.zeros((10, 300), np.uint8), "PNG"))


def multipart(fields: dict[str, tuple[str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b""
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_parse_multipart_reads_fields_and_binary_data():
    data = bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n"
    body, ctype = multipart({"image": ("r\u00f6ntgen 1.jpg", data), "note": (None, b"hi")})
    parts = parse_multipart(body, ctype)
    assert parts["image"].data == data and parts["image"].filename == "r\u00f6ntgen 1.jpg"
    assert parts["note"].data == b"hi" and parts["note"].filename is None


@pytest.mark.parametrize("mutate, message", [
    (lambda b, c: (b, "application/json"), "multipart/form-data"),
    (lambda b, c: (b, "multipart/form-data"), "boundary"),
    (lambda b, c: (b[:-30], c), "not terminated"),
    (lambda b, c: (b"junk", c), "never appears"),
    (lambda b, c: (b.replace(b"--b0undary--", b"--b0undary" + b.split(b"--b0undary")[1] + b"--b0undary--"), c),
     "twice"),
])
def test_parse_multipart_is_strict(mutate, message):
    body, ctype = multipart({"image": ("a.png", b"x" * 40)})
    with pytest.raises(InputError, match=message):
        parse_multipart(*mutate(body, ctype))


# --------------------------------------------------------------------------------------------------
# the HTTP API
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(predictor):
    app = DemoApp(predictor, max_sessions=3, max_upload_bytes=UPLOAD_LIMIT, examples=ExampleImages(count=2))
    srv = create_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON or raw bytes) for one request; error statuses are returned too."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, exc.headers, exc.read()
    if head.get("Content-Type", "").startswith("application/json"):
        return status, head, json.loads(raw)
    return status, head, raw


def post_json(server, path: str, obj, raw: bytes | None = None):
    return call(server, "POST", path, raw if raw is not None else json.dumps(obj).encode(),
                {"Content-Type": "application/json"})


def upload(server, data: bytes, filename: str = "scan.jpg", field: str = "image"):
    body, ctype = multipart({field: (filename, data)})
    return call(server, "POST", "/api/predict", body, {"Content-Type": ctype})


@pytest.fixture()
def session_state(server, xray):
    status, _, state = upload(server, encode(xray[0]))
    assert status == 200, state
    return state


def test_page_and_assets_are_served_without_anything_from_the_internet(server):
    status, head, html = call(server, "GET", "/")
    assert status == 200 and head["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in head["Content-Security-Policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        status, _, text = call(server, "GET", asset)
        assert status == 200
        html += text
    html = html.replace(b"http://www.w3.org/2000/svg", b"")  # the SVG namespace name, never fetched
    assert b"://" not in html and b"@import" not in html
    assert call(server, "GET", "/static/../server.py")[0] == 404
    assert call(server, "GET", "/static/nothing.js")[0] == 404


def test_info_describes_the_model(server):
    status, _, info = call(server, "GET", "/api/info")
    assert status == 200 and info["num_keypoints"] == K and len(info["keypoint_names"]) == K
    assert info["vertebra_names"][0] == "T1" and info["vertebra_names"][-1] == "L5"
    assert info["max_upload_bytes"] == UPLOAD_LIMIT and len(info["examples"]) == 2


def test_predict_returns_68_points_in_original_pixels(server, xray, session_state):
    state = session_state
    height, width = xray[0].shape
    assert (state["width"], state["height"]) == (width, height) and state["name"] == "scan.jpg"
    points = np.array(state["points"])
    assert points.shape == (K, 2) and state["fixed"] == {} and state["can_undo"] is False
    assert (points >= 0).all() and (points[:, 0] <= width).all() and (points[:, 1] <= height).all()
    assert len(state["least_confident"]) == 5 and len(state["confidence"]) == K
    assert state["cobb"] is not None and len(state["cobb"]["angles"]) == 3
    status, head, png = call(server, "GET", state["image_url"])
    assert status == 200 and head["Content-Type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), decode_upload(encode(xray[0])))


def test_png_upload_works(server, xray):
    status, _, state = upload(server, encode(xray[0], "PNG"), "scan.png")
    assert status == 200 and len(state["points"]) == K


def test_refine_moves_the_others_and_never_the_fixed(server, session_state):
    sid, before = session_state["session"], np.array(session_state["points"])
    fixed = {"26": [before[26, 0] + 13.371, before[26, 1] - 7.5]}
    status, _, state = post_json(server, "/api/refine", {"session": sid, "fixed": fixed})
    assert status == 200, state
    after = np.array(state["points"])
    assert state["points"][26] == fixed["26"] and state["fixed"] == fixed  # exact float round trip
    assert np.abs(np.delete(after, 26, 0) - np.delete(before, 26, 0)).max() > 0
    assert state["can_undo"] is True and 26 not in state["least_confident"]
    fixed["3"] = [1.0, 2.0]
    status, _, state = post_json(server, "/api/refine", {"session": sid, "fixed": fixed})
    assert state["points"][26] == fixed["26"] and state["points"][3] == [1.0, 2.0]
    status, _, state = post_json(server, "/api/undo", {"session": sid})
    assert status == 200 and state["fixed"] == {"26": fixed["26"]}
    status, _, state = post_json(server, "/api/reset", {"session": sid})
    assert status == 200 and state["fixed"] == {} and np.array_equal(np.array(state["points"]), before)
    status, _, state = call(server, "GET", f"/api/state?session={sid}")
    assert status == 200 and state["action"] == "reset"


def test_export_round_trip(server, session_state):
    sid = session_state["session"]
    fixed = {"10": [50.125, 60.5], "51": [70.0, 300.75]}
    _, _, state = post_json(server, "/api/refine", {"session": sid, "fixed": fixed})
    points = np.array(state["points"])

    status, head, doc = call(server, "GET", f"/api/export?session={sid}&format=json")
    assert status == 200 and 'filename="scan_keypoints.json"' in head["Content-Disposition"]
    assert np.array_equal(np.array(doc["points"]), points) and doc["fixed"] == [10, 51]
    assert doc["names"][10] == "T3 bottom-left" and doc["width"] == state["width"]

    status, head, raw = call(server, "GET", f"/api/export?session={sid}&format=csv")
    rows = raw.decode().strip().split("\n")
    assert status == 200 and rows[0] == "index,name,x,y,fixed" and len(rows) == K + 1
    table = np.array([[float(v) for v in row.split(",")[2:4]] for row in rows[1:]])
    assert np.array_equal(table, points)
    assert rows[11].endswith(",1") and rows[12].endswith(",0")

    status, head, raw = call(server, "GET", f"/api/export?session={sid}&format=mat")
    p2 = scipy.io.loadmat(io.BytesIO(raw))["p2"]
    assert status == 200 and p2.shape == (K, 2) and np.array_equal(p2, points)
    assert p2[10].tolist() == fixed["10"]

    assert call(server, "GET", f"/api/export?session={sid}&format=xml")[0] == 400


def test_bundled_examples(server):
    status, _, state = post_json(server, "/api/example", {"index": 1})
    assert status == 200 and len(state["points"]) == K and state["name"].startswith("synthetic-")
    assert post_json(server, "/api/example", {"index": 9})[0] == 400
    assert post_json(server, "/api/example", {"index": "1"})[0] == 400


@pytest.mark.parametrize("data, status, message", [
    (b"just some text, no image", 415, "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0 truncated", 415, "could not be decoded"),
    (b"", 415, "empty"),
])
def test_bad_uploads_are_refused_with_a_message(server, data, status, message):
    got, _, body = upload(server, data, "x.jpg")
    assert got == status and message in body["error"]


def test_upload_without_image_field_or_form(server, xray):
    got, _, body = upload(server, encode(xray[0]), field="file")
    assert got == 400 and "'image' field" in body["error"]
    got, _, body = call(server, "POST", "/api/predict", encode(xray[0]), {"Content-Type": "image/jpeg"})
    assert got == 400 and "multipart/form-data" in body["error"]


def test_too_large_upload_is_refused_before_decoding(server):
    got, head, body = upload(server, b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT + 70_000))
    assert got == 413 and "limit" in body["error"]


@pytest.mark.parametrize("payload, raw, status, message", [
    ({"session": "nope", "fixed": {}}, None, 410, "the last edit was NOT saved"),
    ({"fixed": {}}, None, 410, "the last edit was NOT saved"),
    (None, b'{"a": ' * 100_000, 400, "nested too deeply"),  # was a 500 (RecursionError)
    (None, b"[" * 100_000, 400, "nested too deeply"),
    (None, b'{"session": "SID", "fixed": {"3": [NaN, 1]}}', 400, "finite"),
    (None, b"{not json", 400, "not valid JSON"),
    (None, b"[1, 2]", 400, "JSON object"),
    ({"session": "SID"}, None, 400, "'fixed'"),
    ({"session": "SID", "fixed": {"68": [1, 1]}}, None, 400, "not a point index"),
    ({"session": "SID", "fixed": {"3": [1e9, 1]}}, None, 400, "outside"),
])
def test_bad_refine_requests_are_refused_with_a_message(server, session_state, payload, raw, status, message):
    sid = session_state["session"]
    if payload is not None:
        payload = {k: (sid if v == "SID" else v) for k, v in payload.items()}
    if raw is not None:
        raw = raw.replace(b"SID", sid.encode())
    got, _, body = post_json(server, "/api/refine", payload, raw)
    assert got == status and message in body["error"]


def test_json_routes_need_json_content_type(server, session_state):
    body = json.dumps({"session": session_state["session"], "fixed": {}}).encode()
    got, _, answer = call(server, "POST", "/api/refine", body, {"Content-Type": "text/plain"})
    assert got == 415 and "application/json" in answer["error"]


def test_unknown_routes_and_methods(server):
    assert call(server, "GET", "/api/nothing")[0] == 404
    got, head, _ = call(server, "GET", "/api/refine")
    assert got == 405 and head["Allow"] == "POST"


def test_foreign_host_and_cross_origin_posts_are_refused(server, session_state):
    got, _, body = call(server, "GET", "/api/info", headers={"Host": "attacker.example:80"})
    assert got == 403 and "Host" in body["error"]
    payload = json.dumps({"session": session_state["session"], "fixed": {}}).encode()
    got, _, body = call(server, "POST", "/api/refine", payload,
                        {"Content-Type": "application/json", "Origin": "http://attacker.example"})
    assert got == 403 and "cross-origin" in body["error"]
    got, _, _ = call(server, "POST", "/api/refine", payload,
                     {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}"})
    assert got == 200


def test_only_loopback_unless_allowed(predictor):
    with pytest.raises(ValueError, match="allow_remote"):
        create_server(DemoApp(predictor), "0.0.0.0", 0)


def test_least_recently_used_sessions_expire(server, xray):
    data = encode(xray[0])
    sids = [upload(server, data)[2]["session"] for _ in range(4)]  # the server keeps 3
    status, _, body = call(server, "GET", f"/api/state?session={sids[0]}")
    assert status == 410 and body["saved"] is False and "NOT saved" in body["error"]
    assert all(call(server, "GET", f"/api/state?session={s}")[0] == 200 for s in sids[1:])
