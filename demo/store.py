"""Where a folder's annotations live between edits, reloads and restarts: one SQLite file.

    store = AnnotationStore(Path("xrays") / STORE_NAME)
    seqs, version = store.sync("scan 1.jpg", records)   # after every action: the history as it is now
    records, cursor_seq = store.history("scan 1.jpg")
    store.set_done("scan 1.jpg", True)

Why SQLite (standard library) rather than one JSON file per image: every edit is one transaction, so a
crash or a killed server leaves either the old or the new history, never half of one; the history
grows by one row per edit instead of rewriting a file that holds all of it; two server threads (or a
second process, e.g. ``demo.py --export`` while the server runs) read and write safely.

A store is never silently replaced: a file that is empty (0 bytes, e.g. truncated while its write-ahead
log still holds the history), not SQLite, damaged (``PRAGMA quick_check``) or another program's database
is refused with a StoreError naming it, and left as it was (checked on a read-only connection, which
cannot write or checkpoint). ``check_folder`` refuses a store whose images are none of the folder's.

A record is one entry of an image's undo history: the points shown (K x (x, y) original pixels), the
fixed points ({index: (x, y)}), the per-point confidence, the action that made it and, for an auto-fix,
the points it suggested (moved, not fixed). Coordinates are
stored as JSON numbers, which round-trip Python floats exactly.

The store numbers the entries (``seq``: the largest of the image + 1, inside the write transaction) and
counts the changes of each image (``version``, +1 on every saved action and every done mark): a client
that sends the version it saw can be told when someone else changed the image since.
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
SQLITE_MAGIC = b"SQLite format 3\x00"
_COLUMNS = {"images": {"name", "cursor_seq", "done", "updated"},
            "states": {"name", "seq", "action", "points", "fixed", "confidence"}}  # at least these
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    cursor_seq INTEGER NOT NULL,       -- the history entry shown (undo moves it back, redo forward)
    done INTEGER NOT NULL DEFAULT 0,   -- marked done by the annotator
    updated REAL NOT NULL,             -- unix time of the last change
    version INTEGER NOT NULL DEFAULT 0 -- changes so far (edits, undo/redo, done): spots stale clients
);
CREATE TABLE IF NOT EXISTS states (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,              -- increasing within an image; the order of the history
    action TEXT NOT NULL,
    points TEXT NOT NULL,              -- JSON [[x, y], ...] original pixels
    fixed TEXT NOT NULL,               -- JSON {"<index>": [x, y]}
    confidence TEXT NOT NULL,          -- JSON [c, ...]
    suggested TEXT NOT NULL DEFAULT '[]', -- JSON [index, ...]: points an auto-fix moved (not fixed)
    PRIMARY KEY (name, seq)
);
"""


class StoreError(RuntimeError):
    """The store file cannot be opened or written; the message names it."""


@dataclass(frozen=True)
class Record:
    seq: int | None  # None: a new entry, numbered by AnnotationStore.sync
    action: str
    points_xy: list  # [[x, y], ...]
    fixed_xy: dict  # {index: (x, y)}
    confidence: list
    suggested: list = ()  # [index, ...] points an auto-fix moved (predicted, not fixed)


def _record(row: tuple) -> Record:
    """A ``states`` row (seq, action, points, fixed, confidence, suggested) as a Record."""
    seq, action, points, fixed, confidence, suggested = row
    return Record(seq, action, json.loads(points), {int(k): tuple(v) for k, v in json.loads(fixed).items()},
                  json.loads(confidence), json.loads(suggested))


class AnnotationStore:
    """Thread-safe; every method is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._check_existing()
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            # write-ahead log + FULL: an answered edit is on disk at one fsync per edit (the default
            # rollback journal needs two, about 5x slower here); needs a local file system
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(images)")}
            if "version" not in columns:  # a store written before versions were counted
                self._conn.execute("ALTER TABLE images ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
            if "suggested" not in {row[1] for row in self._conn.execute("PRAGMA table_info(states)")}:
                # a store written before auto-fix
                self._conn.execute("ALTER TABLE states ADD COLUMN suggested TEXT NOT NULL DEFAULT '[]'")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the annotation store ({exc})") from None
        self._lock = threading.Lock()

    def _refuse(self, why: str) -> StoreError:
        return StoreError(f"{self.path}: {why}; refusing to use it (nothing was changed): restore it, or move it "
                          f"aside with its -wal and -shm files to start a new store")

    def _check_existing(self) -> None:
        """StoreError unless ``path`` is absent (a new store) or the tool's intact SQLite store."""
        wal = self.path.with_name(self.path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.is_file() else 0
        if not self.path.exists():
            if wal_bytes:
                raise self._refuse(f"is missing but its write-ahead log {wal.name} ({wal_bytes} bytes) is there")
            return
        if not self.path.is_file():
            raise self._refuse("is not a file")
        size = self.path.stat().st_size
        if size == 0:
            raise self._refuse("is empty (0 bytes)" + (f" but its write-ahead log {wal.name} holds {wal_bytes} bytes"
                                                         if wal_bytes else ""))
        with open(self.path, "rb") as handle:
            if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise self._refuse("is not an SQLite database (malformed or another kind of file)")
        try:  # read only: refusing must not write or checkpoint anything
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise self._refuse(f"cannot be opened ({exc})") from None
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise self._refuse(f"is damaged ({'; '.join(problems)[:300]})")
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table, needed in _COLUMNS.items():
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if tables and not needed <= columns:
                    raise self._refuse(f"is not an annotation store of this tool (tables: "
                                       f"{', '.join(sorted(tables))[:200]})")
        except sqlite3.Error as exc:
            raise self._refuse(f"is damaged or not an annotation store ({exc})") from None
        finally:
            conn.close()

    def check_folder(self, images_dir: str | Path, names: list[str]) -> None:
        """StoreError if the store holds work on images and none of them is among ``names`` (the
        folder's images): it was made for another folder."""
        stored = sorted(name for (name,) in self._read("SELECT name FROM images"))
        if stored and not set(stored) & set(names):
            shown = ", ".join(stored[:3]) + (", ..." if len(stored) > 3 else "")
            raise StoreError(f"{self.path}: holds the work on {len(stored)} image(s) ({shown}), none of them in "
                             f"{images_dir}: it belongs to another folder; refusing to use it (nothing was "
                             f"changed): choose another --annotations folder, or move it aside")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, statements) -> None:
        """``(sql, args)`` statements in one transaction: committed whole or rolled back."""
        self._transaction(lambda conn: [conn.execute(sql, args) for sql, args in statements])

    def _transaction(self, work):
        """``work(connection)`` in one write transaction, taken at once (BEGIN IMMEDIATE: what it reads
        cannot change before it writes, even from another process); its result, or StoreError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                    self._conn.commit()
                except BaseException:
                    self._conn.rollback()
                    raise
                return result
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: the edit could not be saved ({exc})") from None

    def _read(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read the annotation store ({exc})") from None

    # ---------------------------------------------------------------------------------------------
    def sync(self, name: str, records: list[Record], cursor_seq: int | None = None) -> tuple[list[int], int]:
        """Make the stored history of ``name`` equal ``records``, in one transaction: records with seq
        None are new and numbered here (after every seq the image has), stored entries missing from
        ``records`` are deleted. ``cursor_seq`` is the shown entry (None: the last record). Returns
        (the seq of every record, in order; the image's new version)."""

        def work(conn: sqlite3.Connection) -> tuple[list[int], int]:
            stored = {seq for (seq,) in conn.execute("SELECT seq FROM states WHERE name = ?", (name,))}
            next_seq = 1 + max(stored, default=-1)
            seqs = []
            for record in records:
                seq = record.seq
                if seq is None or seq not in stored:
                    if seq is None:
                        seq, next_seq = next_seq, next_seq + 1
                    conn.execute(
                        "INSERT INTO states (name, seq, action, points, fixed, confidence, suggested) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (name, seq, record.action, json.dumps(record.points_xy),
                         json.dumps({str(i): list(xy) for i, xy in record.fixed_xy.items()}),
                         json.dumps(record.confidence), json.dumps([int(i) for i in record.suggested])))
                seqs.append(seq)
            for seq in sorted(stored - set(seqs)):
                conn.execute("DELETE FROM states WHERE name = ? AND seq = ?", (name, seq))
            shown = seqs[-1] if cursor_seq is None else cursor_seq
            conn.execute("INSERT INTO images (name, cursor_seq, updated, version) VALUES (?, ?, ?, 1) "
                         "ON CONFLICT(name) DO UPDATE SET cursor_seq = excluded.cursor_seq, "
                         "updated = excluded.updated, version = version + 1", (name, shown, time.time()))
            (version,), = conn.execute("SELECT version FROM images WHERE name = ?", (name,))
            return seqs, version

        return self._transaction(work)

    def version(self, name: str) -> int:
        """How many changes ``name`` has had (0: never saved)."""
        rows = self._read("SELECT version FROM images WHERE name = ?", (name,))
        return rows[0][0] if rows else 0

    def history(self, name: str) -> tuple[list[Record], int | None]:
        """(records in seq order, the shown seq); ([], None) for an image never edited."""
        rows = self._read("SELECT cursor_seq FROM images WHERE name = ?", (name,))
        if not rows:
            return [], None
        records = [_record(row) for row in self._read(
            "SELECT seq, action, points, fixed, confidence, suggested FROM states WHERE name = ? ORDER BY seq",
            (name,))]
        return records, rows[0][0]

    def current(self, name: str) -> Record | None:
        """The shown entry of ``name``'s history, or None."""
        rows = self._read("SELECT s.seq, s.action, s.points, s.fixed, s.confidence, s.suggested FROM images i "
                          "JOIN states s "
                          "ON s.name = i.name AND s.seq = i.cursor_seq WHERE i.name = ?", (name,))
        return _record(rows[0]) if rows else None

    def set_done(self, name: str, done: bool) -> int:
        """Mark ``name`` done or not; returns its new version."""
        if not self._read("SELECT 1 FROM images WHERE name = ?", (name,)):
            raise StoreError(f"{name}: has no saved points yet; open it before marking it done")

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE images SET done = ?, updated = ?, version = version + 1 WHERE name = ?",
                         (int(done), time.time(), name))
            (version,), = conn.execute("SELECT version FROM images WHERE name = ?", (name,))
            return version

        return self._transaction(work)

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
