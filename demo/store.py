"""Where a folder's annotations live between edits, reloads and restarts: one SQLite file.

    store = AnnotationStore(Path("xrays") / STORE_NAME)
    store.sync("scan 1.jpg", records, cursor_seq)   # after every action: the history as it is now
    records, cursor_seq = store.history("scan 1.jpg")
    store.set_done("scan 1.jpg", True)

Why SQLite (standard library) rather than one JSON file per image: every edit is one transaction, so a
crash or a killed server leaves either the old or the new history, never half of one; the history
grows by one row per edit instead of rewriting a file that holds all of it; two server threads (or a
second process, e.g. ``demo.py --export`` while the server runs) read and write safely.

A record is one entry of an image's undo history: the points shown (K x (x, y) original pixels), the
fixed points ({index: (x, y)}), the per-point confidence and the action that made it. Coordinates are
stored as JSON numbers, which round-trip Python floats exactly.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STORE_NAME", "Record", "AnnotationStore", "StoreError"]

STORE_NAME = "keypoints.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    cursor_seq INTEGER NOT NULL,       -- the history entry shown (undo moves it back, redo forward)
    done INTEGER NOT NULL DEFAULT 0,   -- marked done by the annotator
    updated REAL NOT NULL              -- unix time of the last change
);
CREATE TABLE IF NOT EXISTS states (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,              -- increasing within an image; the order of the history
    action TEXT NOT NULL,
    points TEXT NOT NULL,              -- JSON [[x, y], ...] original pixels
    fixed TEXT NOT NULL,               -- JSON {"<index>": [x, y]}
    confidence TEXT NOT NULL,          -- JSON [c, ...]
    PRIMARY KEY (name, seq)
);
"""


class StoreError(RuntimeError):
    """The store file cannot be opened or written; the message names it."""


@dataclass(frozen=True)
class Record:
    seq: int
    action: str
    points_xy: list  # [[x, y], ...]
    fixed_xy: dict  # {index: (x, y)}
    confidence: list


def _record(row: tuple) -> Record:
    """A ``states`` row (seq, action, points, fixed, confidence) as a Record."""
    seq, action, points, fixed, confidence = row
    return Record(seq, action, json.loads(points), {int(k): tuple(v) for k, v in json.loads(fixed).items()},
                  json.loads(confidence))


class AnnotationStore:
    """Thread-safe; every method is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            # write-ahead log + FULL: an answered edit is on disk at one fsync per edit (the default
            # rollback journal needs two, about 5x slower here); needs a local file system
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the annotation store ({exc})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, statements) -> None:
        with self._lock:
            try:
                with self._conn:  # one transaction: committed whole or rolled back
                    for sql, args in statements:
                        self._conn.execute(sql, args)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: the edit could not be saved ({exc})") from None

    def _read(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read the annotation store ({exc})") from None

    # ---------------------------------------------------------------------------------------------
    def sync(self, name: str, records: list[Record], cursor_seq: int) -> None:
        """Make the stored history of ``name`` equal ``records`` (new ones inserted, dropped ones deleted)
        with ``cursor_seq`` shown, in one transaction."""
        stored = {seq for (seq,) in self._read("SELECT seq FROM states WHERE name = ?", (name,))}
        keep = {r.seq for r in records}
        statements = [("DELETE FROM states WHERE name = ? AND seq = ?", (name, seq)) for seq in sorted(stored - keep)]
        for record in records:
            if record.seq not in stored:
                statements.append((
                    "INSERT INTO states (name, seq, action, points, fixed, confidence) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, record.seq, record.action, json.dumps(record.points_xy),
                     json.dumps({str(i): list(xy) for i, xy in record.fixed_xy.items()}),
                     json.dumps(record.confidence))))
        statements.append((
            "INSERT INTO images (name, cursor_seq, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET cursor_seq = excluded.cursor_seq, updated = excluded.updated",
            (name, cursor_seq, time.time())))
        self._write(statements)

    def history(self, name: str) -> tuple[list[Record], int | None]:
        """(records in seq order, the shown seq); ([], None) for an image never edited."""
        rows = self._read("SELECT cursor_seq FROM images WHERE name = ?", (name,))
        if not rows:
            return [], None
        records = [_record(row) for row in self._read(
            "SELECT seq, action, points, fixed, confidence FROM states WHERE name = ? ORDER BY seq", (name,))]
        return records, rows[0][0]

    def current(self, name: str) -> Record | None:
        """The shown entry of ``name``'s history, or None."""
        rows = self._read("SELECT s.seq, s.action, s.points, s.fixed, s.confidence FROM images i JOIN states s "
                          "ON s.name = i.name AND s.seq = i.cursor_seq WHERE i.name = ?", (name,))
        return _record(rows[0]) if rows else None

    def set_done(self, name: str, done: bool) -> None:
        if not self._read("SELECT 1 FROM images WHERE name = ?", (name,)):
            raise StoreError(f"{name}: has no saved points yet; open it before marking it done")
        self._write([("UPDATE images SET done = ?, updated = ? WHERE name = ?", (int(done), time.time(), name))])

    def is_done(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM images WHERE name = ? AND done = 1", (name,)))

    def summary(self) -> dict[str, dict]:
        """{name: {"done": bool, "entries": history entries, "first": the first entry's action}}."""
        counts = {name: (count, first) for name, count, first in self._read(
            "SELECT name, COUNT(*), (SELECT action FROM states t WHERE t.name = s.name ORDER BY seq LIMIT 1) "
            "FROM states s GROUP BY name")}
        return {name: {"done": bool(done), "entries": counts.get(name, (0, None))[0],
                       "first": counts.get(name, (0, None))[1]}
                for name, done in self._read("SELECT name, done FROM images")}
