"""The folder workflow under concurrent use: nothing answered is ever lost, and a stale edit is shown as a
conflict (HTTP 409 with the current state) instead of silently overwriting another tab's work.

Spoken to over a real loopback socket (127.0.0.1 only, a bounded number of clients and seconds), with a
tiny random network standing in for the model and synthetic X-rays (dataset/synthetic.py). The server
keeps ONE image in memory (``max_sessions=1``), so images are evicted and reopened from the store all
the time while other requests still use them.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from demo.predictor import KeypointPredictor
from demo.store import STORE_NAME, AnnotationStore
from tests.test_demo_folder import Server, make_folder

K = 68
CLIENTS = 20
IMAGES = 5  # four clients on each image
EDITS_PER_CLIENT = 5
LOAD_TIMEOUT_S = 300  # the whole load test; each request has its own 60 s


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from tests.test_demo_api import tiny_checkpoint

    return KeypointPredictor.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pth"))


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "xrays"
    return images, make_folder(images, count=IMAGES)


@pytest.fixture()
def server(predictor, folder):
    srv = Server(predictor, folder[0], max_sessions=1)  # one image in memory: every other one is evicted
    yield srv
    srv.stop()


# --------------------------------------------------------------------------------------------------
# no answered edit is lost
# --------------------------------------------------------------------------------------------------
def test_every_answered_edit_is_stored_under_20_concurrent_clients_with_one_image_in_memory(server, folder):
    names = sorted(folder[1])
    answered: dict[str, list[dict]] = {name: [] for name in names}
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        rng = random.Random(number)
        name = names[number % IMAGES]
        try:
            start.wait(timeout=60)
            opened = server.post("/api/open", {"name": name})
            for _ in range(EDITS_PER_CLIENT):
                point = rng.randrange(K)
                if rng.random() < 0.7:  # a blind client: no "version", as before conflicts existed
                    xy = [round(rng.uniform(0, opened["width"]), 3), round(rng.uniform(0, opened["height"]), 3)]
                    status, body = server.call("POST", "/api/refine",
                                               {"session": opened["session"], "fixed": {str(point): xy}})
                else:
                    status, body = server.call("POST", "/api/accept", {"session": opened["session"], "points": [point]})
                with lock:
                    if status == 200 and body.get("saved") is True:
                        answered[name].append(body)
                    else:
                        failures.append(f"{name}: {status} {body.get('error')}")
        except Exception as exc:  # noqa: BLE001 - reported below with the others
            with lock:
                failures.append(f"{name}: client {number}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, LOAD_TIMEOUT_S - (time.monotonic() - began)))
    assert not any(t.is_alive() for t in threads), f"the clients did not finish within {LOAD_TIMEOUT_S} s"
    assert failures == []
    assert sum(map(len, answered.values())) == CLIENTS * EDITS_PER_CLIENT

    server.restart()  # read what a new process reads: the store, nothing from memory
    for name in names:
        records, cursor_seq = server.store.history(name)
        stored = [(r.points_xy, {str(i): list(xy) for i, xy in r.fixed_xy.items()}) for r in records]
        lost = [a["version"] for a in answered[name] if (a["points"], a["fixed"]) not in stored]
        assert lost == [], f"{name}: {len(lost)} of {len(answered[name])} answered edits are not in the store"
        assert len(records) == 1 + len(answered[name]), f"{name}: one history entry per answered edit"
        versions = [a["version"] for a in answered[name]]
        assert len(set(versions)) == len(versions), f"{name}: two answers carry the same version"
        last = max(answered[name], key=lambda a: a["version"])
        current = next(r for r in records if r.seq == cursor_seq)
        assert (current.points_xy, {str(i): list(xy) for i, xy in current.fixed_xy.items()}) == \
            (last["points"], last["fixed"]), f"{name}: the stored state is not the last answered one"
        reopened = server.post("/api/open", {"name": name})
        assert (reopened["points"], reopened["fixed"], reopened["version"]) == \
            (last["points"], last["fixed"], last["version"])


# --------------------------------------------------------------------------------------------------
# two tabs on one image: a stale edit is a conflict, shown, never resolved silently
# --------------------------------------------------------------------------------------------------
def stored(server, name):
    records, cursor_seq = server.store.history(name)
    return [r.seq for r in records], cursor_seq, server.store.version(name), server.store.is_done(name)


def test_a_stale_edit_is_answered_409_with_the_current_state_and_changes_nothing(server, folder):
    name = sorted(folder[1])[0]
    tab1 = server.post("/api/open", {"name": name})
    tab2 = server.post("/api/open", {"name": name})  # the same image in a second tab
    assert tab2["version"] == tab1["version"]
    sid = tab1["session"]
    server.post("/api/refine", {"session": sid, "fixed": {"47": [10.0, 20.0]}, "version": tab1["version"]})
    server.post("/api/undo", {"session": sid})  # something to redo, too
    fixed49 = server.post("/api/redo", {"session": sid})
    before = stored(server, name)
    stale = tab2["version"]
    for path, extra in [("/api/refine", {"fixed": {"49": [30.0, 40.0]}}), ("/api/accept", {"points": [3]}),
                        ("/api/undo", {}), ("/api/redo", {}), ("/api/reset", {}), ("/api/done", {"done": True})]:
        status, body = server.call("POST", path, {"session": sid, "version": stale, **extra})
        assert status == 409, (path, body)
        assert body["conflict"] is True and body["saved"] is False and "changed elsewhere" in body["error"]
        assert (body["version"], body["points"], body["fixed"]) == \
            (fixed49["version"], fixed49["points"], fixed49["fixed"]), f"{path}: not the current state"
        assert stored(server, name) == before, f"{path}: a stale edit changed the store"
    current = server.post("/api/accept", {"session": sid, "points": [3], "version": fixed49["version"]})
    assert current["version"] > fixed49["version"] and "3" in current["fixed"] and "47" in current["fixed"]
    done = server.post("/api/done", {"session": sid, "done": True, "version": current["version"]})
    assert done["done"] and done["version"] > current["version"]  # done is a change too
    status, body = server.call("POST", "/api/undo", {"session": sid, "version": current["version"]})
    assert status == 409 and body["done"] is True


@pytest.mark.parametrize("version", ["3", 1.5, True, -1, [1], {"v": 1}])
def test_a_version_that_is_not_a_version_number_is_refused(server, folder, version):
    opened = server.post("/api/open", {"name": sorted(folder[1])[0]})
    status, body = server.call("POST", "/api/reset", {"session": opened["session"], "version": version})
    assert status == 400 and "'version'" in body["error"]


def test_versions_hold_when_the_image_is_evicted_and_after_a_restart(server, folder):
    first, other = sorted(folder[1])[:2]
    opened = server.post("/api/open", {"name": first})
    edited = server.post("/api/refine", {"session": opened["session"], "fixed": {"5": [12.0, 34.0]},
                                         "version": opened["version"]})
    assert edited["version"] > opened["version"]
    server.post("/api/open", {"name": other})  # one image in memory: the first is evicted
    status, body = server.call("POST", "/api/refine", {"session": opened["session"], "fixed": {}, "version": opened["version"]})
    assert status == 409 and body["version"] == edited["version"] and body["fixed"] == edited["fixed"]
    server.restart()
    status, body = server.call("POST", "/api/refine", {"session": opened["session"], "fixed": {}, "version": opened["version"]})
    assert status == 409 and body["version"] == edited["version"]
    again = server.post("/api/accept", {"session": opened["session"], "points": [5], "version": edited["version"]})
    assert again["version"] > edited["version"] and again["fixed"] == edited["fixed"]


def test_a_store_written_before_versions_were_counted_opens_and_counts_from_there(tmp_path):
    import sqlite3

    path = tmp_path / STORE_NAME
    with sqlite3.connect(path) as conn:  # the schema before the version column, with one saved image
        conn.executescript("CREATE TABLE images (name TEXT PRIMARY KEY, cursor_seq INTEGER NOT NULL, done INTEGER NOT "
                           "NULL DEFAULT 0, updated REAL NOT NULL); CREATE TABLE states (name TEXT NOT NULL, seq "
                           "INTEGER NOT NULL, action TEXT NOT NULL, points TEXT NOT NULL, fixed TEXT NOT NULL, "
                           "confidence TEXT NOT NULL, PRIMARY KEY (name, seq));"
                           "INSERT INTO images VALUES ('a.jpg', 4, 0, 0); INSERT INTO states VALUES "
                           "('a.jpg', 4, 'predict', '[[1, 2]]', '{}', '[0.5]');")
    conn.close()
    store = AnnotationStore(path)
    try:
        records, cursor_seq = store.history("a.jpg")
        assert [r.seq for r in records] == [4] and cursor_seq == 4 and store.version("a.jpg") == 0
        new = type(records[0])(None, "refine", [[3, 4]], {0: (3, 4)}, [0.7])
        assert store.sync("a.jpg", [*records, new]) == ([4, 5], 1)  # numbered after the largest seq
        assert store.history("a.jpg")[1] == 5 and store.set_done("a.jpg", True) == 2
    finally:
        store.close()
