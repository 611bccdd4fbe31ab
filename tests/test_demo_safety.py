"""The annotation tool against an attacker, a damaged store and bad requests:

- remote use (``--allow-remote``): a warning, an access token in the printed URL required on every
  request (query, header or the cookie the page then carries), and the Host header checked against
  the served addresses (against DNS rebinding) with or without ``--allow-remote``;
- symlinks that leave the images folder are neither listed nor served;
- a store that is empty (maybe with its write-ahead log beside it), malformed or from another folder is
  refused at start with one line, and left byte for byte as it was;
- every bad request is a 4xx with a message, a removed image a clear status, ``GET`` has no side
  effects, and two exports in one second do not collide.

Network tests speak only to 127.0.0.1; a tiny random network stands in for the model.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from demo.server import DemoApp, create_server
from demo.store import STORE_NAME, AnnotationStore, Record, StoreError
from demo.worklist import Worklist
from tests.test_demo_folder import Server, make_folder

REPO = Path(__file__).resolve().parents[1]
K = 68


class NoModel:  # the routes used in the access tests never predict
    num_keypoints, model_name, source, untrained, size_rc = 68, "none", "none", True, (128, 64)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from demo.predictor import KeypointPredictor
    from tests.test_demo_api import tiny_checkpoint

    return KeypointPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth"))


def raw_call(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, headers, JSON or bytes) of one request with exactly these headers (Host included)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            if value is not None:
                connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, response.headers, json.loads(raw) if kind.startswith("application/json") else raw
    finally:
        connection.close()


@pytest.fixture()
def remote_server():
    """A server started with allow_remote (bound to loopback: tests never leave this computer)."""
    server = create_server(DemoApp(NoModel()), "127.0.0.1", 0, allow_remote=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------------------------------
# remote use: token and Host header
# --------------------------------------------------------------------------------------------------
def test_allow_remote_prints_a_url_with_a_token(remote_server):
    token = remote_server.token
    assert token and len(token) >= 32
    assert remote_server.url == f"http://127.0.0.1:{remote_server.port}/?token={token}"


def test_allow_remote_answers_nothing_without_the_token(remote_server):
    port = remote_server.port
    for path in ("/", "/api/info", "/static/app.js", "/api/info?token=wrong"):
        status, _, body = raw_call(port, "GET", path)
        assert status == 401 and "token" in body["error"], path
    status, _, body = raw_call(port, "POST", "/api/example", {"Content-Type": "application/json"}, b'{"index": 0}')
    assert status == 401 and "token" in body["error"]


def test_the_token_in_the_url_sets_a_cookie_the_page_then_carries(remote_server):
    port, token = remote_server.port, remote_server.token
    status, head, _ = raw_call(port, "GET", f"/?token={token}")
    assert status == 200
    cookie = head["Set-Cookie"]
    assert token in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    pair = cookie.split(";")[0]
    for path in ("/static/app.js", "/api/info"):  # what the page loads next, with the cookie only
        assert raw_call(port, "GET", path, {"Cookie": pair})[0] == 200, path
    assert raw_call(port, "GET", "/api/info", {"Authorization": f"token {token}"})[0] == 200
    assert raw_call(port, "GET", "/api/info", {"Cookie": pair.split("=")[0] + "=wrong"})[0] == 401


def test_allow_remote_still_refuses_a_foreign_host_header(remote_server):
    port, token = remote_server.port, remote_server.token
    for host in ("evil.com", f"evil.com:{port}", f"127.0.0.1:{port + 1}", ""):
        status, _, body = raw_call(port, "GET", f"/api/info?token={token}", {"Host": host})
        assert status in (400, 403) and "Host" in body["error"], host
    status, _, body = raw_call(port, "POST", f"/api/example?token={token}",
                               {"Host": "evil.com", "Origin": "http://evil.com", "Content-Type": "application/json"},
                               b'{"index": 0}')
    assert status in (400, 403), body
    assert raw_call(port, "GET", f"/api/info?token={token}", {"Host": f"localhost:{port}"})[0] == 200


def test_loopback_server_accepts_only_loopback_names_with_its_port():
    server = create_server(DemoApp(NoModel()), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.port
        assert server.url == f"http://127.0.0.1:{port}/"  # no token on this computer alone
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert raw_call(port, "GET", "/api/info", {"Host": host})[0] == 200, host
        for host in ("evil.com", f"evil.com:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", f"192.168.0.1:{port}"):
            assert raw_call(port, "GET", "/api/info", {"Host": host})[0] == 403, host
    finally:
        server.shutdown()
        server.server_close()


def test_demo_py_warns_and_prints_the_token_url(tmp_path):
    from tests.test_demo_api import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pth")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "demo.py"), "--checkpoint", str(checkpoint), "--backend", "torch",
         "--threads", "1", "--host", "127.0.0.1", "--allow-remote", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Open "):
                break
        text = "".join(lines)
        assert "WARNING" in text and "--allow-remote" in text, text
        url = next(word for word in lines[-1].split() if word.startswith("http://"))
        assert "?token=" in url
        port = int(url.split(":")[2].split("/")[0])
        token = url.split("?token=")[1]
        assert raw_call(port, "GET", "/api/info")[0] == 401
        assert raw_call(port, "GET", f"/api/info?token={token}")[0] == 200
        assert raw_call(port, "GET", f"/api/info?token={token}", {"Host": "evil.com"})[0] == 403
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------------
# symlinks that leave the images folder
# --------------------------------------------------------------------------------------------------
def test_symlinks_that_leave_the_folder_are_not_listed_or_served(predictor, tmp_path):
    images = tmp_path / "xrays"
    names = sorted(make_folder(images, 2))
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copyfile(images / names[0], secret)
    (images / "leak.jpg").symlink_to(secret)
    (images / "parent.jpg").symlink_to(Path("..") / "outside" / "secret.jpg")
    (images / "alias.jpg").symlink_to(names[0])  # stays inside: fine
    assert Worklist(images).names() == sorted(["alias.jpg", *names])
    srv = Server(predictor, images)
    try:
        listed = [item["name"] for item in srv.call("GET", "/api/worklist")[1]["images"]]
        assert "leak.jpg" not in listed and "parent.jpg" not in listed
        for name in ("leak.jpg", "parent.jpg"):
            status, body = srv.call("POST", "/api/open", {"name": name})
            assert status == 404 and "error" in body
        # a listed image replaced by a symlink to the outside after the start is not served either
        (images / names[1]).unlink()
        (images / names[1]).symlink_to(secret)
        status, body = srv.call("POST", "/api/open", {"name": names[1]})
        assert status == 404 and names[1] in body["error"]
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------
# the store: refused at start, left untouched
# --------------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(STORE_NAME)}


def record(seq: int) -> Record:
    return Record(seq, "refine", [[1.5 * i, 2.0 * i] for i in range(K)], {3: (4.5, 6.0)}, [0.5] * K)


def run_demo(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "demo.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def assert_refused_in_one_line(images: Path, tmp_path: Path, *words: str) -> None:
    """``demo.py --images`` (serve and export) stops with one error line naming the store; nothing changes."""
    before = snapshot(images)
    for args in (["--export", tmp_path / "out"], ["--port", "0", "--checkpoint", tmp_path / "missing.pth"]):
        result = run_demo("--images", images, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and str(images / STORE_NAME) in lines[0], lines[0]
        for word in words:
            assert word in lines[0], lines[0]
        assert "Traceback" not in result.stderr
        assert snapshot(images) == before
    assert not (tmp_path / "out").exists()


def test_an_emptied_store_with_its_wal_is_refused_and_left_untouched(tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)
    path = images / STORE_NAME
    store = AnnotationStore(path)
    store.sync("a.jpg", [record(0), record(1)], 1)
    wal = path.with_name(STORE_NAME + "-wal")
    history_in_wal = wal.read_bytes()  # the server still runs: the edits are in the WAL
    assert len(history_in_wal) > 0
    store.close()
    path.write_bytes(b"")  # emptied by accident, the WAL still there
    wal.write_bytes(history_in_wal)
    with pytest.raises(StoreError, match="empty"):
        AnnotationStore(path)
    assert path.read_bytes() == b"" and wal.read_bytes() == history_in_wal
    assert_refused_in_one_line(images, tmp_path, "empty", "-wal")


def test_an_empty_store_file_alone_is_refused(tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)
    (images / STORE_NAME).write_bytes(b"")
    assert_refused_in_one_line(images, tmp_path, "empty")


def test_a_malformed_store_is_refused_and_left_untouched(tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)
    path = images / STORE_NAME
    path.write_bytes(b"these are not the droids you are looking for" * 100)
    with pytest.raises(StoreError, match="not an SQLite"):
        AnnotationStore(path)
    assert_refused_in_one_line(images, tmp_path, "not an SQLite")


def test_a_database_of_another_program_is_refused_and_left_untouched(tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)
    path = images / STORE_NAME
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (number INTEGER, amount REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.close()
    with pytest.raises(StoreError, match="not an annotation store"):
        AnnotationStore(path)
    assert_refused_in_one_line(images, tmp_path, "not an annotation store")


def test_a_corrupt_store_is_refused(tmp_path):
    images = tmp_path / "xrays"
    make_folder(images, 2)
    path = images / STORE_NAME
    store = AnnotationStore(path)
    for n in range(40):
        store.sync(f"image {n}.jpg", [record(0), record(1)], 1)
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 + 200:4096 * 3] = os.urandom(4096 * 2 - 200)  # pages 2 and 3 overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        AnnotationStore(path)
    assert path.read_bytes() == bytes(data)


def test_a_store_of_another_folder_is_refused(tmp_path):
    other, images = tmp_path / "other", tmp_path / "xrays"
    make_folder(other, 2)
    make_folder(images, 2)
    for name in os.listdir(images):
        os.rename(images / name, images / f"new {name}")
    store = AnnotationStore(other / STORE_NAME)
    store.sync(sorted(os.listdir(other))[0], [record(0)], 0)
    store.set_done(sorted(os.listdir(other))[0], True)
    store.close()
    shutil.copyfile(other / STORE_NAME, images / STORE_NAME)
    assert_refused_in_one_line(images, tmp_path, "another folder")


def test_a_store_of_the_same_folder_is_kept_when_images_come_and_go(tmp_path):
    images = tmp_path / "xrays"
    names = sorted(make_folder(images, 2))
    store = AnnotationStore(images / STORE_NAME)
    store.check_folder(images, names)  # a new store: nothing to compare
    store.sync(names[0], [record(0)], 0)
    store.check_folder(images, names + ["new.jpg"])
    store.check_folder(images, names[:1])
    store.close()


# --------------------------------------------------------------------------------------------------
# bad requests and missing files
# --------------------------------------------------------------------------------------------------
@pytest.fixture()
def folder_server(predictor, tmp_path):
    images = tmp_path / "xrays"
    names = sorted(make_folder(images, 3))
    srv = Server(predictor, images)
    yield srv, images, names
    srv.stop()


def test_huge_numbers_are_refused_with_a_400(folder_server):
    srv, _, names = folder_server
    sid = srv.post("/api/open", {"name": names[0]})["session"]
    for raw, message in [
        ('{"session": "%s", "fixed": {"%s": [1, 1]}}' % (sid, "1" * 5000), "not a point index"),
        ('{"session": "%s", "fixed": {"3": [1%s, 1]}}' % (sid, "0" * 400), "two finite numbers"),
        ('{"session": "%s", "fixed": {"3": [1%s, 1]}}' % (sid, "0" * 5000), "digits"),
        ('{"session": "%s", "fixed": {"3": [1e400, 1]}}' % sid, ""),
    ]:
        status, _, body = raw_call(srv.http.port, "POST", "/api/refine", {"Content-Type": "application/json"},
                                   raw.encode())
        assert status == 400 and message in body["error"], (raw[:80], status, body)
    status, body = srv.call("POST", "/api/accept", {"session": sid, "points": [10 ** 400]})
    assert status == 400


def test_open_needs_a_file_name(folder_server):
    srv, _, _ = folder_server
    for payload in ({"name": 5}, {}, {"name": None}, {"name": ["a.jpg"]}):
        status, body = srv.call("POST", "/api/open", payload)
        assert status == 400 and "'name'" in body["error"] and "NOT saved" not in body["error"], payload


def test_an_image_removed_after_the_start_is_a_clear_404_and_leaves_the_worklist(folder_server):
    srv, images, names = folder_server
    for name in names[:2]:
        sid = srv.post("/api/open", {"name": name})["session"]
        srv.post("/api/done", {"session": sid, "done": True})
    (images / names[2]).unlink()  # never opened
    status, body = srv.call("POST", "/api/open", {"name": names[2]})
    assert status in (404, 410) and names[2] in body["error"] and "removed" in body["error"]
    listed = [item["name"] for item in srv.call("GET", "/api/worklist")[1]["images"]]
    assert listed == names[:2]
    (images / names[1]).unlink()  # marked done: the export cannot include it
    status, body = srv.call("POST", "/api/export_dataset", {"all": False})
    assert status in (404, 410) and names[1] in body["error"] and "removed" in body["error"]
    assert not (images / "exports").exists() or not list((images / "exports").iterdir())


def test_get_state_of_an_image_never_opened_changes_nothing(folder_server):
    srv, images, names = folder_server
    for path in (f"/api/state?session=f:{names[0]}", f"/api/image?session=f:{names[0]}",
                 f"/api/export?session=f:{names[0]}&format=json"):
        status, body = srv.call("GET", path.replace(" ", "%20"))
        assert status == 404 and "open" in body["error"], path
    assert srv.store.summary() == {}
    assert srv.call("GET", "/api/worklist")[1]["images"][0]["status"] == "new"
    srv.store.close()
    srv.store = AnnotationStore(images / STORE_NAME)
    assert srv.store.history(names[0]) == ([], None)


def test_a_saved_image_reopens_for_get_without_writing(folder_server):
    srv, images, names = folder_server
    state = srv.post("/api/open", {"name": names[0]})
    srv.post("/api/refine", {"session": state["session"], "fixed": {"3": [10.5, 20.25]}})
    srv.restart()
    history = srv.store.history(names[0])
    status, body = srv.call("GET", f"/api/state?session=f:{names[0]}".replace(" ", "%20"))
    assert status == 200 and body["fixed"] == {"3": [10.5, 20.25]}
    assert srv.store.history(names[0]) == history


def test_two_exports_in_the_same_second_get_two_folders(folder_server, monkeypatch):
    srv, images, names = folder_server
    for name in names[:2]:
        sid = srv.post("/api/open", {"name": name})["session"]
        srv.post("/api/done", {"session": sid, "done": True})
    monkeypatch.setattr(time, "strftime", lambda *args: "20270101-120000")
    first = srv.post("/api/export_dataset", {"all": False})
    second = srv.post("/api/export_dataset", {"all": False})
    assert first["path"] != second["path"]
    assert Path(first["path"]).is_dir() and Path(second["path"]).is_dir()
