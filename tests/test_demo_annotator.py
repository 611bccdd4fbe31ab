"""What annotators expect from CVAT and Label Studio, in the folder workflow (python demo.py --images DIR):
COCO keypoints JSON out and back in (the format CVAT, Label Studio and MMPose read), the image sent in
its own format, per-image progress in the worklist and a stated undo limit.

Spoken to over a real loopback socket with a tiny random network standing in for the model (as in
tests/test_demo_folder.py); images are synthetic.
"""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from PIL import Image

from demo.coco import read_coco
from demo.images import decode_upload
from demo.predictor import KeypointPredictor
from demo.session import AnnotationSession
from tests.test_demo_folder import Server, folder, make_folder, server  # noqa: F401 - fixtures

K = 68


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from tests.test_demo_api import tiny_checkpoint

    return KeypointPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth"))


def get_raw(server, path: str):
    """(status, Content-Type, body bytes) of a GET."""
    try:
        with urllib.request.urlopen(f"{server.http.url.rstrip('/')}{path}", timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def annotate(server, names) -> dict[str, dict]:
    """Edit each image a little (a fix, an accepted vertebra; the first marked done) -> shown states."""
    states = {}
    for k, name in enumerate(names):
        sid = server.post("/api/open", {"name": name})["session"]
        server.post("/api/refine", {"session": sid, "fixed": {str(10 + k): [20.5 + k, 40.125]}})
        states[name] = server.post("/api/accept", {"session": sid, "points": [40, 41, 42, 43]})
        if k == 0:
            states[name] = server.post("/api/done", {"session": sid, "done": True})
    return states


# --------------------------------------------------------------------------------------------------
# COCO keypoints
# --------------------------------------------------------------------------------------------------
def test_coco_export_has_the_keys_the_coco_format_requires(server, folder):
    names = sorted(folder[1])[:2]
    states = annotate(server, names)
    status, ctype, body = get_raw(server, "/api/export_coco")
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    # cocodataset.org/#format-data, "Keypoint Detection": the keys a reader (pycocotools, MMPose, CVAT) needs
    assert {"images", "annotations", "categories", "info", "licenses"} <= set(doc)
    assert [image["file_name"] for image in doc["images"]] == names  # only images with saved points
    for image in doc["images"]:
        assert {"id", "width", "height", "file_name"} <= set(image)
        assert all(isinstance(image[k], int) for k in ("id", "width", "height"))
    (category,) = doc["categories"]
    assert {"id", "name", "supercategory", "keypoints", "skeleton"} <= set(category)
    assert len(category["keypoints"]) == K and category["keypoints"][:2] == ["T1 top-left", "T1 top-right"]
    edges = {tuple(e) for e in category["skeleton"]}
    assert len(edges) == 4 * 17 and min(min(e) for e in edges) == 1 and max(max(e) for e in edges) == K
    assert {(1, 2), (2, 4), (4, 3), (3, 1)} <= edges  # T1's outline, 1-based as COCO counts
    ids = {image["id"]: image for image in doc["images"]}
    for annotation in doc["annotations"]:
        assert {"id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd",
                "segmentation"} <= set(annotation)
        assert annotation["category_id"] == category["id"] and annotation["num_keypoints"] == K
        image = ids[annotation["image_id"]]
        kp = np.array(annotation["keypoints"]).reshape(K, 3)
        assert kp[:, :2].tolist() == states[image["file_name"]]["points"]  # exactly, original pixels
        assert set(kp[:, 2].tolist()) == {2}
        x, y, w, h = annotation["bbox"]
        assert (x, y, x + w, y + h) == (kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max())
        assert sorted(annotation["attributes"]["checked"]) == sorted(map(int, states[image["file_name"]]["fixed"]))


def test_coco_export_then_import_gives_the_same_points(predictor, server, folder, tmp_path):
    images, truth = folder
    names = sorted(truth)[:3]
    states = annotate(server, names)
    exported = get_raw(server, "/api/export_coco")[2]

    # into a fresh copy of the folder (no store): every image gets the exported points, checks and done
    copy = tmp_path / "copy"
    shutil.copytree(images, copy, ignore=shutil.ignore_patterns("keypoints.sqlite3*"))
    other = Server(predictor, copy)
    try:
        report = other.post("/api/import_coco", json.loads(exported))
        assert report == {"imported": names, "skipped": []}
        for name in names:
            got = other.post("/api/open", {"name": name})
            assert got["points"] == states[name]["points"] and got["fixed"] == states[name]["fixed"]
            assert got["done"] == states[name]["done"] and got["action"] == "import"
        again = json.loads(get_raw(other, "/api/export_coco")[2])
        assert {**again, "info": None} == {**json.loads(exported), "info": None}  # and out again the same
    finally:
        other.stop()

    # into the same folder after more edits: back to the exported points, one undo away from the edits
    sid = server.post("/api/open", {"name": names[1]})["session"]
    later = server.post("/api/refine", {"session": sid, "fixed": {"5": [30.0, 50.0]}})
    server.post("/api/import_coco", json.loads(exported))
    again = server.post("/api/open", {"name": names[1]})
    assert again["points"] == states[names[1]]["points"] and again["fixed"] == states[names[1]]["fixed"]
    assert server.post("/api/undo", {"session": sid})["points"] == later["points"]


def test_export_coco_from_the_shell_equals_the_page_export(server, folder, tmp_path):
    from tests.test_demo_folder import run_demo

    images, truth = folder
    annotate(server, sorted(truth)[:2])
    from_page = json.loads(get_raw(server, "/api/export_coco")[2])
    out = tmp_path / "labels.json"
    done = run_demo("--images", images, "--export-coco", out)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and json.loads(out.read_text()) == from_page
    again = run_demo("--images", images, "--export-coco", out)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_coco_from_another_tool_labelled_points_are_checked_unlabelled_ones_predicted(server, folder):
    images, truth = folder
    name = sorted(truth)[0]
    height, width = cv2.imread(str(images / name), cv2.IMREAD_GRAYSCALE).shape
    placed = truth[name]
    keypoints = []
    for i, (x, y) in enumerate(placed.tolist()):
        keypoints += [0, 0, 0] if i >= 60 else [x, y, 2]  # L4 and L5 not labelled (as CVAT writes them)
    doc = {"images": [{"id": 7, "file_name": f"task_3/images/{name}", "width": width, "height": height},
                      {"id": 8, "file_name": "not_in_folder.jpg", "width": width, "height": height}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "keypoints": keypoints, "num_keypoints": 60},
                           {"id": 2, "image_id": 8, "category_id": 3, "keypoints": keypoints, "num_keypoints": 60}],
           "categories": [{"id": 3, "name": "spine", "keypoints": [f"p{i}" for i in range(K)], "skeleton": []}]}
    assert server.post("/api/import_coco", doc) == {"imported": [name], "skipped": ["not_in_folder.jpg"]}
    got = server.post("/api/open", {"name": name})
    assert got["points"][:60] == placed[:60].tolist() and sorted(map(int, got["fixed"])) == list(range(60))
    assert all(p != [0, 0] for p in got["points"][60:])  # predicted, not left at (0, 0)

    # refused as a whole, with a message, and nothing changes
    def refused(doc, message):
        status, body = server.call("POST", "/api/import_coco", doc)
        assert status == 400 and message in body["error"] and body["error"].startswith("not imported"), body
        assert server.post("/api/open", {"name": name})["points"] == got["points"]

    wrong_size = json.loads(json.dumps(doc))
    wrong_size["images"][0]["width"] = width + 1
    refused(wrong_size, f"{name} is {width} x {height} pixels here but {width + 1} x {height} in the file")
    short = json.loads(json.dumps(doc))
    short["annotations"][0]["keypoints"] = keypoints[:-3]
    refused(short, f"annotations[0] ({name}): 'keypoints' must be 204 finite numbers")
    outside = json.loads(json.dumps(doc))
    outside["annotations"][0]["keypoints"][0] = width + 5.0
    refused(outside, "points [0] lie outside")
    refused({"images": [], "annotations": []}, "no 'categories'")
    refused({**doc, "categories": [{"id": 3, "keypoints": ["a"] * 17}]}, "has 17 keypoints; the tool's model has 68")
    twice = json.loads(json.dumps(doc))
    twice["annotations"][1]["image_id"] = 7
    refused(twice, "a second annotation")
    refused({**doc, "images": doc["images"][1:], "annotations": doc["annotations"][1:]}, "none of the 1 annotated")


def test_one_image_exports_as_coco_and_reads_back(server, folder):
    name = sorted(folder[1])[1]
    state = annotate(server, [name])[name]
    status, ctype, body = get_raw(server, f"/api/export?session={quote('f:' + name)}&format=coco")
    assert status == 200 and ctype == "application/json"
    found = read_coco(json.loads(body), K)
    assert list(found) == [name]
    assert found[name].points_xy.tolist() == state["points"]
    assert found[name].checked == sorted(map(int, state["fixed"])) and found[name].labelled == list(range(K))


# --------------------------------------------------------------------------------------------------
# the image in its own format
# --------------------------------------------------------------------------------------------------
def test_folder_images_are_served_in_their_own_format(predictor, tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)  # a JPEG and an 8-bit PNG
    jpeg = next(images.glob("*.jpg")).name
    gray = cv2.imread(str(images / jpeg), cv2.IMREAD_GRAYSCALE)
    Image.fromarray(gray).save(images / "b_gray8.png")
    Image.fromarray(gray).convert("RGB").save(images / "c_rgb.jpg", quality=90)
    Image.fromarray(gray.astype(np.uint16) * 200).save(images / "d_deep16.png")  # the tool stretches it
    rotated = Image.fromarray(gray)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees": the tool turns the pixels
    rotated.save(images / "e_rotated.jpg", exif=exif.tobytes())
    srv = Server(predictor, images)
    try:
        for name, own in ((jpeg, "image/jpeg"), ("b_gray8.png", "image/png"), ("c_rgb.jpg", "image/jpeg"),
                          ("d_deep16.png", None), ("e_rotated.jpg", None)):
            opened = srv.post("/api/open", {"name": name})
            status, ctype, body = get_raw(srv, opened["image_url"])
            assert status == 200
            shown = decode_upload(body)
            assert shown.shape == (opened["height"], opened["width"])
            if own:
                assert ctype == own and body == (images / name).read_bytes(), name  # the file itself
            else:
                assert ctype == "image/png" and body != (images / name).read_bytes(), name
                assert np.array_equal(shown, decode_upload((images / name).read_bytes())), name
        assert srv.post("/api/open", {"name": "e_rotated.jpg"})["width"] == gray.shape[0]  # turned
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------
# progress and the undo limit
# --------------------------------------------------------------------------------------------------
def test_worklist_shows_checked_points_of_each_image(server, folder):
    names = sorted(folder[1])
    states = annotate(server, names[:2])
    status, body = server.call("GET", "/api/worklist")
    checked = {item["name"]: item["checked"] for item in body["images"]}
    assert checked == {names[0]: 5, names[1]: 5, names[2]: None, names[3]: None}
    assert all(len(states[n]["fixed"]) == 5 for n in names[:2])  # the fixed point and a vertebra
    server.post("/api/open", {"name": names[2]})  # opened, not edited: saved with nothing checked
    assert {i["name"]: i["checked"] for i in server.call("GET", "/api/worklist")[1]["images"]}[names[2]] == 0


def test_the_stated_undo_limit_holds(predictor, server):
    status, info = server.call("GET", "/api/info")
    limit = info["undo_limit"]
    assert limit == 198
    gray = make_folder_image()
    session = AnnotationSession("s", "x.jpg", gray, predictor)
    first = session.current.seq
    seqs = [session.accept([i % K]).seq for i in range(limit + 20)]
    undone = [session.undo().seq for _ in range(limit)]
    assert undone == seqs[-2::-1][:limit], "each of the last undo_limit actions is taken back one by one"
    assert session.undo().seq == first and not session.can_undo  # then back to the first prediction


def make_folder_image() -> np.ndarray:
    from dataset.synthetic import make_sample

    return make_sample(0, "test", 0, scale=0.3).image


def test_readme_states_the_undo_limit():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "demo" / "README.md").read_text()
    assert "198" in text and "undo" in text.lower()
