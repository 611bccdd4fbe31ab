"""Annotating a folder with the tool (python demo.py --images DIR): the worklist, edits saved at once in
SQLite (they survive a restart, undo/redo included), existing annotations as starting points, checked
points that never move, and the export as a boostnet_labeldata tree that data_preprocessing.py reads.

Spoken to over a real loopback socket, with a tiny random network standing in for the model (the
contracts here do not depend on the weights). Images are synthetic (dataset/synthetic.py).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from dataset.synthetic import make_sample
from demo.predictor import KeypointPredictor
from demo.server import DemoApp, create_server
from demo.store import STORE_NAME, AnnotationStore, StoreError
from demo.worklist import Worklist

REPO = Path(__file__).resolve().parents[1]
K = 68


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from tests.test_demo_api import tiny_checkpoint

    return KeypointPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth"))


def make_folder(folder: Path, count: int = 4) -> dict[str, np.ndarray]:
    """``count`` synthetic X-rays (JPEG, the last one PNG) -> {file name: true points (K, 2) float}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index in range(count):
        sample = make_sample(0, "test", index, scale=0.3)
        name = f"{Path(sample.name).stem}.png" if index == count - 1 else sample.name
        cv2.imwrite(str(folder / name), sample.image)
        truth[name] = sample.points_xy.astype(np.float64)
    return truth


class Server:
    """The app as ``demo.py --images`` builds it, on a free port; ``restart()`` is a new process's worth
    of state (new app, new store connection, nothing kept in memory)."""

    def __init__(self, predictor, images: Path, annotations: Path | None = None, max_sessions: int = 8):
        self.predictor, self.images, self.annotations, self.max_sessions = predictor, images, annotations, max_sessions
        self.start()

    def start(self):
        self.worklist = Worklist(self.images, self.annotations)
        self.store = AnnotationStore(self.worklist.annotations_dir / STORE_NAME)
        self.app = DemoApp(self.predictor, max_sessions=self.max_sessions, worklist=self.worklist, store=self.store)
        self.http = create_server(self.app, "127.0.0.1", 0)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self):
        self.http.shutdown()
        self.http.server_close()
        self.store.close()

    def restart(self):
        self.stop()
        self.start()

    def call(self, method: str, path: str, obj=None):
        data = None if obj is None else json.dumps(obj).encode()
        request = urllib.request.Request(f"{self.http.url.rstrip('/')}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post(self, path, obj):
        status, body = self.call("POST", path, obj)
        assert status == 200, body
        return body


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "xrays"
    return images, make_folder(images)


@pytest.fixture()
def server(predictor, folder):
    srv = Server(predictor, folder[0])
    yield srv
    srv.stop()


def worklist_status(server) -> dict[str, str]:
    status, body = server.call("GET", "/api/worklist")
    assert status == 200
    return {item["name"]: item["status"] for item in body["images"]}


# --------------------------------------------------------------------------------------------------
def test_worklist_lists_the_folder_with_status(server, folder):
    names = sorted(folder[1])
    assert list(worklist_status(server)) == names and set(worklist_status(server).values()) == {"new"}
    opened = server.post("/api/open", {"name": names[1]})
    assert opened["name"] == names[1] and len(opened["points"]) == K and opened["persistent"]
    assert worklist_status(server)[names[1]] == "new"  # opening is not an edit
    server.post("/api/refine", {"session": opened["session"], "fixed": {"3": [10.5, 20.25]}})
    assert worklist_status(server)[names[1]] == "in progress"
    server.post("/api/done", {"session": opened["session"], "done": True})
    assert worklist_status(server)[names[1]] == "done"
    assert server.call("POST", "/api/open", {"name": "../etc/passwd"})[0] == 404


def test_edits_and_undo_history_survive_a_restart(server, folder):
    name = sorted(folder[1])[0]
    sid = server.post("/api/open", {"name": name})["session"]
    one = server.post("/api/refine", {"session": sid, "fixed": {"26": [100.125, 300.5]}})
    two = server.post("/api/refine", {"session": sid, "fixed": {"26": [100.125, 300.5], "40": [90.0, 400.75]}})
    server.restart()
    again = server.post("/api/open", {"name": name})
    assert again["points"] == two["points"] and again["fixed"] == two["fixed"] and again["can_undo"]
    undone = server.post("/api/undo", {"session": again["session"]})
    assert undone["points"] == one["points"] and undone["fixed"] == one["fixed"] and undone["can_redo"]
    server.restart()  # the cursor position (after the undo) is saved too, and redo still works
    assert server.post("/api/open", {"name": name})["points"] == one["points"]
    redone = server.post("/api/redo", {"session": again["session"]})  # the old session id reopens by itself
    assert redone["points"] == two["points"] and not redone["can_redo"]
    # a new edit after an undo drops the redo branch, also in the store
    server.post("/api/undo", {"session": again["session"]})
    branch = server.post("/api/refine", {"session": again["session"], "fixed": {"26": [100.125, 300.5], "5": [50, 60]}})
    server.restart()
    final = server.post("/api/open", {"name": name})
    assert final["points"] == branch["points"] and not final["can_redo"]


def test_checked_points_never_move_and_only_free_points_change(server, folder):
    name = sorted(folder[1])[2]
    state = server.post("/api/open", {"name": name})
    sid = state["session"]
    vertebra = [20, 21, 22, 23]  # T6's four corners
    accepted = server.post("/api/accept", {"session": sid, "points": vertebra})
    assert accepted["points"] == state["points"], "accepting must not move anything"
    assert {int(i) for i in accepted["fixed"]} == set(vertebra)
    assert all(accepted["fixed"][str(i)] == state["points"][i] for i in vertebra)
    refined = server.post("/api/refine", {"session": sid, "fixed": {**accepted["fixed"], "60": [80.5, 500.25]}})
    assert all(refined["points"][i] == state["points"][i] for i in vertebra)
    free = [i for i in range(K) if i not in vertebra + [60]]
    assert np.abs(np.array(refined["points"])[free] - np.array(state["points"])[free]).max() > 0
    status, body = server.call("POST", "/api/accept", {"session": sid, "points": [68]})
    assert status == 400 and "point indices" in body["error"]


def test_existing_annotations_are_the_starting_points(predictor, tmp_path):
    images, annotations = tmp_path / "xrays", tmp_path / "labels"
    truth = make_folder(images, 3)
    annotations.mkdir()
    mat_name, json_name, bad_name = sorted(truth)
    scipy.io.savemat(annotations / f"{mat_name}.mat", {"p2": truth[mat_name].astype(np.uint16)})  # as AASCE
    tool_points = truth[json_name] + 0.375
    (annotations / f"{json_name}.json").write_text(json.dumps({"points": tool_points.tolist(), "fixed": [7, 9]}))
    scipy.io.savemat(annotations / f"{bad_name}.mat", {"p2": np.zeros((17, 2))})
    srv = Server(predictor, images, annotations)
    try:
        assert set(worklist_status(srv).values()) == {"in progress"}
        from_mat = srv.post("/api/open", {"name": mat_name})
        assert from_mat["points"] == truth[mat_name].tolist() and len(from_mat["fixed"]) == K
        from_json = srv.post("/api/open", {"name": json_name})
        assert from_json["points"] == tool_points.tolist() and sorted(map(int, from_json["fixed"])) == [7, 9]
        status, body = srv.call("POST", "/api/open", {"name": bad_name})
        assert status == 422 and f"{bad_name}.mat" in body["error"] and "(17, 2)" in body["error"]
    finally:
        srv.stop()


def test_tool_csv_and_json_exports_load_back(predictor, tmp_path):
    from demo.worklist import read_annotation_file

    images = tmp_path / "xrays"
    name = sorted(make_folder(images, 2))[0]
    srv = Server(predictor, images)
    try:
        sid = srv.post("/api/open", {"name": name})["session"]
        state = srv.post("/api/refine", {"session": sid, "fixed": {"11": [40.0625, 90.5]}})
        for fmt in ("json", "csv", "mat"):
            url = f"{srv.http.url}api/export?session={urllib.parse.quote(sid)}&format={fmt}"
            target = tmp_path / f"export.{fmt}"
            target.write_bytes(urllib.request.urlopen(url, timeout=60).read())
            points, fixed = read_annotation_file(target, K)
            assert points.tolist() == state["points"], fmt
            assert fixed == ([11] if fmt != "mat" else list(range(K)))
    finally:
        srv.stop()


def test_a_failed_save_is_reported_as_not_saved_and_nothing_changes(server, folder, monkeypatch):
    name = sorted(folder[1])[0]
    sid = server.post("/api/open", {"name": name})["session"]
    before = server.post("/api/refine", {"session": sid, "fixed": {"2": [30.0, 40.0]}})

    def full_disk(*args, **kwargs):
        raise StoreError(f"{server.store.path}: the edit could not be saved (database or disk is full)")

    monkeypatch.setattr(server.store, "sync", full_disk)
    status, body = server.call("POST", "/api/refine", {"session": sid, "fixed": {"2": [30.0, 40.0], "9": [5.0, 6.0]}})
    assert status == 503 and body["saved"] is False and "NOT saved" in body["error"]
    monkeypatch.undo()
    assert server.post("/api/open", {"name": name})["fixed"] == before["fixed"]  # the store's state, not memory's


# --------------------------------------------------------------------------------------------------
# export: annotate -> boostnet_labeldata -> data_preprocessing.py
# --------------------------------------------------------------------------------------------------
def run_demo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "demo.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_export_tree_round_trip_through_preprocessing(server, folder, tmp_path):
    images, truth = folder
    names = sorted(truth)
    stored = {}
    for k, name in enumerate(names[:3]):
        sid = server.post("/api/open", {"name": name})["session"]
        state = server.post("/api/refine", {"session": sid, "fixed": {str(k): [12.5 + k, 30.25]}})
        stored[name] = np.array(state["points"])
        if k < 2:
            server.post("/api/done", {"session": sid, "done": True})
    server.stop()

    nothing = run_demo("--images", images, "--export", tmp_path / "none", "--test-share", "0.5", "--all", "--annotations",
                       tmp_path / "empty")
    assert nothing.returncode == 2 and "0 image(s)" in nothing.stderr and "Traceback" not in nothing.stderr
    done = run_demo("--images", images, "--export", tmp_path / "done")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "done" / "data").glob("*/*")) == sorted(names[:2])
    out = tmp_path / "all"
    result = run_demo("--images", images, "--export", out, "--all")
    assert result.returncode == 0, result.stderr
    again = run_demo("--images", images, "--export", out, "--all")
    assert again.returncode == 2 and "already exists" in again.stderr

    exported = {}
    for split in ("training", "test"):
        labels = out / "labels" / split
        rows = list(csv.reader(open(labels / "filenames.csv", newline="")))
        for (file_name,) in rows:
            p2 = scipy.io.loadmat(labels / f"{file_name}.mat")["p2"]
            assert p2.dtype == np.float64
            exported[file_name] = (split, p2)
        landmarks = np.loadtxt(labels / "landmarks.csv", delimiter=",", ndmin=2)
        for row, (file_name,) in zip(landmarks, rows):
            gray = cv2.imread(str(out / "data" / split / file_name), cv2.IMREAD_GRAYSCALE)
            p2 = exported[file_name][1]
            expected = np.concatenate([p2[:, 0] / gray.shape[1], p2[:, 1] / gray.shape[0]])
            np.testing.assert_allclose(row, expected, rtol=1e-4)
    png = names[-1]
    assert set(exported) == set(names[:2]) | {names[2] if not names[2].endswith(".png") else f"{Path(png).stem}.jpg"}
    for name in names[:3]:
        file_name = name if name.endswith(".jpg") else f"{Path(name).stem}.jpg"
        assert np.array_equal(exported[file_name][1], stored[name]), "exported points must equal the stored ones"
        if name.endswith(".jpg"):  # copied byte for byte
            assert (out / "data" / exported[file_name][0] / file_name).read_bytes() == (images / name).read_bytes()
    assert sorted(split for split, _ in exported.values()).count("test") == 1

    target = tmp_path / "prepared"
    prep = subprocess.run([sys.executable, str(REPO / "data_preprocessing.py"), "--source", str(out), "--target",
                           str(target), "--val-size", "0", "--no-progress", "--workers", "1"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert prep.returncode == 0, prep.stderr
    tables = {split: json.loads((target / "dataset16_512" / f"{split}.json").read_text()) for split in ("train", "test")}
    labels = {Path(e["image"]).stem: np.array(e["label"]) for split in tables.values() for e in split}
    assert len(labels) == 3
    for file_name, (_, p2) in exported.items():
        assert np.array_equal(labels[Path(file_name).stem], p2)
