"""The annotation tool's web server: standard library only (``http.server``), a small JSON API and the
static page in ``demo/static``.

    app = DemoApp(KeypointPredictor.from_checkpoint(path))
    server = create_server(app, "127.0.0.1", 8765)        # port 0: any free port
    server.serve_forever()

API (all JSON unless stated; coordinates are (x, y) in original image pixels; errors are
``{"error": message}`` with status 400 bad input, 403 refused connection, 404 unknown route or image,
409 nothing to undo/redo or an edit made on a stale version (the body is then the current state with
"conflict": true), 410 the session is not open (the edit was NOT saved), 413 upload too large,
415 not a JPEG/PNG image or not JSON, 422 an existing annotation file is unusable, 503 the store could
not save the edit):

    GET  /api/info                              model, point names, examples, upload limit, folder
    POST /api/predict    multipart field image  -> state of a new session (+ "image_url")
    POST /api/example    {"index": i}           -> the same for bundled synthetic example i
    POST /api/refine     {"session", "fixed": {"<index>": [x, y], ...}}  -> state
    POST /api/accept     {"session", "points": [indices]}  -> state (those points fixed where they are)
    POST /api/undo       {"session"}            -> state before the last action
    POST /api/redo       {"session"}            -> state after the last undone action
    POST /api/reset      {"session"}            -> the first prediction again (undoable)
    POST /api/autofix    {"session"}            -> one automatic revision round (needs an error detector,
                                                   else 400): the moved points are "suggested", not fixed
    GET  /api/state?session=ID                  -> state
    GET  /api/image?session=ID                  -> the image as the model reads it (a folder image's own
                                                   JPEG/PNG file when the browser shows it the same, else PNG)
    GET  /api/export?session=ID&format=json|csv|mat|coco   -> attachment
  with a folder (``demo.py --images DIR``; every action is saved in ``demo.store`` before it is answered):
    GET  /api/worklist                          the images with status new / in progress / done
    POST /api/open       {"name"}               -> state of that image (session "f:<name>", reopens itself)
    POST /api/done       {"session", "done"}    -> state
    POST /api/export_dataset {"all"}            -> {"path", "training", "test", "images", "command"}
    GET  /api/export_coco                       -> COCO keypoints JSON of the images with saved points
    POST /api/import_coco  a COCO document      -> {"imported", "skipped"} (demo.coco; all or nothing)

A state is ``{"session", "name", "width", "height", "points": [[x, y] x K], "fixed": {"<index>": [x, y]},
"confidence": [K], "least_confident": [indices], "error_scores": [K] or null, "check_first": [indices],
"check_first_by": "detector" or "confidence", "suggested": [indices], "cobb": {...} or null, "can_undo",
"can_redo", "action", "version", "model_ms", "score_ms", "saved", "persistent", "done", "notes"}``; every
fixed point in "points" is exactly the value sent. "check_first" ranks the points not fixed by the error
detector's scores (highest first) when one is loaded, else by confidence (lowest first).

Every edit (refine, accept, undo, redo, reset, autofix, done) may carry ``"version"``: the state's version it was
made on. If the image changed since (another tab), nothing is changed and the answer is 409 with the
current state. Versions of folder images are counted by the store, so they hold across restarts.


Safety (``demo.access``): by default only loopback peers are served; the Host header must name this
server (against DNS rebinding); with ``allow_remote`` every request needs the access token printed in the
URL (401 without it); cross-origin POSTs are refused; bodies are size-limited before they are read;
uploads stay in memory (never written to disk).
"""
from __future__ import annotations

import email.message
import io
import email.parser
import email.utils
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from PIL import Image

from demo.access import AccessDenied, AccessGuard, is_loopback
from demo.coco import CocoError, folder_coco, read_coco
from demo.export import FORMATS, cobb_summary, export_bytes, export_filename
from demo.images import ExampleImages, ImageError, browser_shows_as_is, decode_upload, encode_png
from demo.predictor import KeypointPredictor
from demo.session import (NUM_LEAST_CONFIDENT, AnnotationSession, InputError, NothingToUndo, SessionNotFound,
                          SessionStore, State, VersionConflict, keypoint_names, parse_fixed, vertebra_names)
from demo.session import MAX_HISTORY
from demo.store import AnnotationStore, StoreError
from demo.worklist import AnnotationFileError, ImageMissing, Worklist

__all__ = ["DemoApp", "Request", "Response", "create_server", "parse_multipart", "FormPart",
           "DEFAULT_MAX_UPLOAD_BYTES", "STATIC_DIR"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 30 * 2**20
MAX_JSON_BYTES = 2**20
MAX_IMPORT_BYTES = 64 * 2**20  # a COCO file: about 4 kB per image of 68 points
MULTIPART_OVERHEAD = 64 * 2**10  # part headers and boundaries on top of the file itself
MAX_FORM_PARTS = 8
MAX_PART_HEADER_BYTES = 16 * 2**10
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# actions undo takes back one by one: the history keeps the first prediction and the newest MAX_HISTORY - 1
# states, so the newest MAX_HISTORY - 2 actions; one more undo returns to the first prediction
UNDO_LIMIT = MAX_HISTORY - 2
FOLDER_PREFIX = "f:"  # session ids of folder images: "f:<file name>" (they reopen from the store)
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


class HTTPError(Exception):
    """An answer other than 200, with a message for a person."""

    def __init__(self, status: int, message: str, headers: dict | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.body = status, message, headers or {}, body or {}


# ------------------------------------------------------------------------------------------------------
# multipart/form-data (the ``cgi`` module is gone from Python 3.13)
# ------------------------------------------------------------------------------------------------------
@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def _header_param(message: email.message.Message, param: str, header: str) -> str | None:
    value = message.get_param(param, header=header)
    return None if value is None else email.utils.collapse_rfc2231_value(value)


def parse_multipart(body: bytes, content_type: str, max_parts: int = MAX_FORM_PARTS) -> dict[str, FormPart]:
    """Strict RFC 7578 parser: fields by name; InputError on anything malformed or duplicated."""
    header = email.message.Message()
    header["content-type"] = content_type or ""
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise InputError("expected a multipart/form-data body with a boundary (an HTML form upload)")
    if not 1 <= len(boundary) <= 70:
        raise InputError("multipart boundary must have 1..70 characters")
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise InputError("malformed multipart body: the boundary never appears")
        pos = start + 2 + len(delimiter)
    parts: dict[str, FormPart] = {}
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise InputError("malformed multipart body: a boundary is not followed by a line break")
        pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise InputError("malformed multipart body: a part is not terminated (truncated upload?)")
        head_end = body.find(b"\r\n\r\n", pos, end + 2)
        if head_end < 0 or head_end - pos > MAX_PART_HEADER_BYTES:
            raise InputError("malformed multipart body: part headers missing or too long")
        headers = email.parser.HeaderParser().parsestr(body[pos:head_end + 2].decode("utf-8", "replace"))
        if headers.get_content_disposition() != "form-data":
            raise InputError("malformed multipart body: a part lacks 'Content-Disposition: form-data'")
        name = _header_param(headers, "name", "content-disposition")
        if not name:
            raise InputError("malformed multipart body: a part has no field name")
        if name in parts:
            raise InputError(f"field '{name}' appears twice in the form")
        if len(parts) >= max_parts:
            raise InputError(f"too many form fields (at most {max_parts})")
        parts[name] = FormPart(name, _header_param(headers, "filename", "content-disposition"),
                               headers.get_content_type(), body[head_end + 4:end])
        pos = end + 2 + len(delimiter)


# ------------------------------------------------------------------------------------------------------
# the application: requests in, responses out (no sockets here)
# ------------------------------------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj, status: int = 200) -> "Response":
        return cls(status, (json.dumps(obj, allow_nan=False) + "\n").encode())


def _reject_constant(name: str):
    raise InputError(f"JSON numbers must be finite, got {name}")


class DemoApp:
    """Routes, sessions and the model; ``handle(Request) -> Response``."""

    def __init__(self, predictor: KeypointPredictor, *, max_sessions: int = 8,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, examples: ExampleImages | None = None,
                 worklist: Worklist | None = None, store: AnnotationStore | None = None, checker=None):
        """``checker``: a ``demo.detector.PointChecker`` (the error detector) or None: "Check first" by
        confidence and no auto-fix."""
        self.predictor, self.checker = predictor, checker
        self.sessions = SessionStore(max_sessions)
        if (worklist is None) != (store is None):
            raise ValueError("a worklist needs a store and a store a worklist")
        self.worklist, self.store = worklist, store
        self._open_lock = threading.Lock()  # one image opened at a time (decode + first prediction)
        self._export_lock = threading.Lock()
        self.max_upload_bytes = int(max_upload_bytes)
        self.examples = examples if examples is not None else ExampleImages()
        k = predictor.num_keypoints
        self.keypoint_names = keypoint_names(k)
        self.vertebra_names = vertebra_names(k)
        self._static = {p.name: p for p in STATIC_DIR.iterdir()
                        if p.is_file() and re.fullmatch(r"[a-z0-9_-]+\.[a-z]+", p.name) and p.suffix in _STATIC_TYPES}
        self._routes = {
            ("GET", "/"): self._index, ("GET", "/index.html"): self._index,
            ("GET", "/favicon.ico"): lambda r: Response(204, content_type="text/plain"),
            ("GET", "/api/info"): self._info, ("GET", "/api/state"): self._state,
            ("GET", "/api/image"): self._image, ("GET", "/api/export"): self._export,
            ("POST", "/api/predict"): self._predict, ("POST", "/api/example"): self._example,
            ("POST", "/api/refine"): self._refine, ("POST", "/api/undo"): self._undo,
            ("POST", "/api/redo"): self._redo, ("POST", "/api/reset"): self._reset,
            ("POST", "/api/accept"): self._accept, ("POST", "/api/autofix"): self._autofix,
            ("GET", "/api/worklist"): self._worklist, ("POST", "/api/open"): self._open,
            ("POST", "/api/done"): self._done, ("POST", "/api/export_dataset"): self._export_dataset,
        }
        self._routes.update(self._annotator_routes())

    def body_limit(self, path: str) -> int:
        """Largest request body accepted on ``path`` (checked before the body is read)."""
        if path == "/api/import_coco":
            return MAX_IMPORT_BYTES
        return self.max_upload_bytes + MULTIPART_OVERHEAD if path == "/api/predict" else MAX_JSON_BYTES

    def handle(self, request: Request) -> Response:
        try:
            route = self._routes.get((request.method, request.path))
            if route is None and request.method == "GET" and request.path.startswith("/static/"):
                return self._static_file(request.path[len("/static/"):])
            if route is None:
                allowed = sorted(m for m, p in self._routes if p == request.path)
                if allowed:
                    raise HTTPError(405, f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
                                    {"Allow": ", ".join(allowed)})
                raise HTTPError(404, f"no such page or API route: {request.path}")
            return route(request)
        except HTTPError as exc:
            response = Response.json({**exc.body, "error": exc.message}, exc.status)
            response.headers.update(exc.headers)
            return response
        except InputError as exc:
            return Response.json({"error": str(exc)}, 400)
        except ImageError as exc:
            return Response.json({"error": str(exc)}, 415)
        except SessionNotFound as exc:
            return Response.json({"error": str(exc), "saved": False}, 410)
        except StoreError as exc:
            return Response.json({"error": f"NOT saved: {exc}", "saved": False}, 503)
        except AnnotationFileError as exc:
            return Response.json({"error": str(exc)}, 422)
        except ImageMissing as exc:
            return Response.json({"error": str(exc)}, 404)
        except NothingToUndo as exc:
            return Response.json({"error": str(exc)}, 409)
        except Exception as exc:  # noqa: BLE001 - the page must get a message, the log the traceback
            log.error("internal error on %s %s\n%s", request.method, request.path, traceback.format_exc())
            return Response.json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # ---------------------------------------------------------------------------------------------
    def _static_file(self, name: str) -> Response:
        path = self._static.get(name)
        if path is None:
            raise HTTPError(404, f"no such file: /static/{name}")
        return Response(200, path.read_bytes(), _STATIC_TYPES[path.suffix], {"Cache-Control": "no-cache"})

    def _index(self, request: Request) -> Response:
        response = self._static_file("index.html")
        response.headers["Content-Security-Policy"] = _CSP
        return response

    def _info(self, request: Request) -> Response:
        p = self.predictor
        return Response.json({
            "model": p.model_name, "checkpoint": p.source, "untrained": p.untrained,
            "num_keypoints": p.num_keypoints, "keypoint_names": self.keypoint_names,
            "vertebra_names": self.vertebra_names, "network_size_rc": list(p.size_rc),
            "examples": self.examples.names(), "max_upload_bytes": self.max_upload_bytes,
            "least_confident_count": NUM_LEAST_CONFIDENT,
            "folder": str(self.worklist.images_dir) if self.worklist else None,
            "undo_limit": UNDO_LIMIT,
            "detector": self.checker.source if self.checker is not None else None,
        })

    def _start_session(self, name: str, gray) -> Response:
        session = AnnotationSession(secrets.token_urlsafe(12), name, gray, self.predictor, checker=self.checker)
        self.sessions.add(session)
        with session.lock:
            body = self._state_json(session, session.current)
        body["image_url"] = f"/api/image?session={session.session_id}"
        return Response.json(body)

    def _predict(self, request: Request) -> Response:
        form = parse_multipart(request.body, request.headers.get("content-type", ""))
        part = form.get("image")
        if part is None:
            raise InputError("the form has no 'image' field (send the X-ray as multipart field 'image')")
        if len(part.data) > self.max_upload_bytes:
            raise HTTPError(413, self._too_large_message(len(part.data)))
        gray = decode_upload(part.data)
        name = Path((part.filename or "upload").replace("\\", "/")).name or "upload"
        return self._start_session(name[:200], gray)

    def _example(self, request: Request) -> Response:
        body = self._json_body(request)
        index = body.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise InputError(f"'index' must be an integer example number, got {index!r}")
        try:
            name, gray = self.examples.get(index)
        except IndexError as exc:
            raise InputError(str(exc)) from None
        return self._start_session(name, gray)

    # ---------------------------------------------------------------------------------------------
    # a folder of X-rays (python demo.py --images DIR)
    # ---------------------------------------------------------------------------------------------
    def _need_worklist(self) -> Worklist:
        if self.worklist is None:
            raise HTTPError(404, "no image folder is open (start the server with --images DIR)")
        return self.worklist

    def _worklist(self, request: Request) -> Response:
        worklist = self._need_worklist()
        saved = self.store.summary()
        images = []
        for name in worklist.names():
            info = saved.get(name)
            if info is None:  # never opened: a file of points may still exist
                has_file = any(p.is_file() for p in worklist.annotation_candidates(name))
                status, edits = ("in progress" if has_file else "new"), 0
            else:
                edits = info["entries"] - 1
                status = "done" if info["done"] else ("in progress" if edits or info["first"] == "load" else "new")
            images.append({"name": name, "status": status, "edits": edits, "checked": self._checked_count(name)})
        return Response.json({"folder": str(worklist.images_dir), "annotations": str(worklist.annotations_dir),
                              "store": str(self.store.path), "images": images})

    def _open(self, request: Request) -> Response:
        name = self._json_body(request).get("name")
        self._need_worklist()
        if not isinstance(name, str):
            raise InputError(f"'name' must be the file name of an image of the folder, got {name!r:.100}")
        with self._using(f"{FOLDER_PREFIX}{name}") as session, session.lock:
            body = self._state_json(session, session.current)
        body["image_url"] = f"/api/image?session={quote(session.session_id)}"
        return Response.json(body)

    @contextmanager
    def _using(self, session_id, create: bool = True):
        """The session (a folder image reopened if needed), used by this request: while any request uses
        it, it stays the image's one live object. A stale edit inside becomes 409 with the current state.
        ``create=False`` (GET requests, which change nothing): a folder image with no saved history is
        not opened (404)."""
        session = (self._folder_session(session_id, create) if self.worklist
                   else self.sessions.get(session_id, use=True))
        try:
            yield session
        except VersionConflict as exc:
            with session.lock:
                body = self._state_json(session, session.current)
            raise HTTPError(409, f"changed elsewhere: {exc}", body={**body, "saved": False, "conflict": True}) from None
        finally:
            self.sessions.release(session)

    def _folder_session(self, session_id, create: bool = True) -> AnnotationSession:
        """An open folder image, or the image opened again from the folder and the store; in use by the
        caller until ``self.sessions.release``. ``create=False``: an image with no saved history is not
        opened (404)."""
        found = self.sessions.find(session_id, use=True)
        if found is not None or not (self.worklist and isinstance(session_id, str)
                                     and session_id.startswith(FOLDER_PREFIX)):
            return found if found is not None else self.sessions.get(session_id, use=True)
        name = session_id[len(FOLDER_PREFIX):]
        try:
            self.worklist.path(name)
        except KeyError as exc:
            raise HTTPError(404, str(exc.args[0])) from None
        with self._open_lock:
            found = self.sessions.find(session_id, use=True)
            if found is not None:
                return found
            records, cursor_seq = self.store.history(name)
            if not records and not create:
                raise HTTPError(404, f"{name} has not been opened yet: open it first (POST /api/open)")
            gray = self.worklist.read(name)
            loaded, notes = None, []
            if not records:
                found_file = self.worklist.existing_annotation(name, self.predictor.num_keypoints,
                                                               gray.shape[1], gray.shape[0])
                if found_file is not None:
                    loaded, notes = (found_file.points_xy, found_file.fixed), found_file.notes
                    log.info("%s: starting from %s", name, found_file.path)
            # a new image's first state is saved while it is made (on_change); no request can use the
            # image before it is added, and none used the previous object of this image any more
            session = AnnotationSession(session_id, name, gray, self.predictor, saved=records or None,
                                        cursor_seq=cursor_seq, loaded=loaded, version=self.store.version(name),
                                        on_change=self._save, checker=self.checker)
            session.notes = notes
            self.sessions.add(session, use=True)
            return session

    def _save(self, session: AnnotationSession) -> tuple[list[int], int]:
        """Store the session's history (the store numbers new entries); a failure takes the action back."""
        return self.store.sync(session.name, *session.records())

    @staticmethod
    def _version(body: dict) -> int | None:
        """The ``version`` an edit was made on, or None when the client sent none."""
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            shown = repr(version) if isinstance(version, (str, float, bool)) else type(version).__name__
            raise InputError(f"'version' must be the version number of the state the edit was made on, got {shown[:40]}")
        return version

    def _edit(self, session: AnnotationSession, body: dict, action, *args) -> Response:
        """``action(*args, version=...)`` and its state, read under the session's lock."""
        with session.lock:
            state = action(*args, version=self._version(body))
            return Response.json(self._state_json(session, state))

    def _done(self, request: Request) -> Response:
        body = self._json_body(request)
        self._need_worklist()
        with self._using(body.get("session")) as session:
            if not isinstance(body.get("done"), bool):
                raise InputError("'done' must be true or false")
            if not session.session_id.startswith(FOLDER_PREFIX):
                raise InputError("only images of the folder can be marked done")
            with session.lock:
                session.check_version(self._version(body))
                session.adopt_version(self.store.set_done(session.name, body["done"]))
                return Response.json(self._state_json(session, session.current))

    def _export_dataset(self, request: Request) -> Response:
        from demo.dataset_export import ExportError, export_folder

        body = self._json_body(request)
        worklist = self._need_worklist()
        every = body.get("all", False)
        if not isinstance(every, bool):
            raise InputError("'all' must be true or false")
        with self._export_lock:  # one at a time: each gets a folder of its own
            stamp = time.strftime("%Y%m%d-%H%M%S")
            exports = worklist.annotations_dir / "exports"
            out = exports / f"boostnet_labeldata-{stamp}"
            for n in range(2, 1000):
                if not out.exists():
                    break
                out = exports / f"boostnet_labeldata-{stamp}-{n}"
            try:
                report = export_folder(worklist, self.store, out, every=every,
                                       num_keypoints=self.predictor.num_keypoints)
            except ExportError as exc:
                raise InputError(str(exc)) from None
        return Response.json(report)

    def _refine(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            if "fixed" not in body:
                raise InputError("the body needs 'fixed': {\"<point index>\": [x, y], ...} (may be empty)")
            fixed = parse_fixed(body["fixed"], session.num_keypoints, session.width, session.height)
            return self._edit(session, body, session.refine, fixed)

    def _undo(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            return self._edit(session, body, session.undo)

    def _redo(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            return self._edit(session, body, session.redo)

    def _reset(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            return self._edit(session, body, session.reset)

    def _accept(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            points = body.get("points")
            k = session.num_keypoints
            if not (isinstance(points, list) and points and all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k for i in points)):
                raise InputError(f"'points' must be a non-empty list of point indices 0..{k - 1}, got {points!r}")
            return self._edit(session, body, session.accept, points)

    def _autofix(self, request: Request) -> Response:
        body = self._json_body(request)
        with self._using(body.get("session")) as session:
            return self._edit(session, body, session.auto_fix)

    def _state(self, request: Request) -> Response:
        with self._using(self._query_one(request, "session"), create=False) as session, session.lock:
            return Response.json(self._state_json(session, session.current))

    def _image(self, request: Request) -> Response:
        with self._using(self._query_one(request, "session"), create=False) as session:
            served = self._original_image(session)
            if served is not None:
                return served
            return Response(200, encode_png(session.gray), "image/png", {"Cache-Control": "private, max-age=3600"})

    def _export(self, request: Request) -> Response:
        with self._using(self._query_one(request, "session"), create=False) as session, session.lock:
            return self._export_session(session, request)

    def _export_session(self, session: AnnotationSession, request: Request) -> Response:
        fmt = self._query_one(request, "format")
        if fmt not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        state = session.current
        data = export_bytes(fmt, image_name=session.name, width=session.width, height=session.height,
                            points_xy=state.points_xy, fixed=list(state.fixed_xy),
                            keypoint_names=self.keypoint_names,
                            cobb=cobb_summary(state.points_xy, session.height, self.vertebra_names))
        filename = export_filename(session.name, fmt)
        return Response(200, data, FORMATS[fmt], {"Content-Disposition": f'attachment; filename="{filename}"'})

    # ---------------------------------------------------------------------------------------------
    def _too_large_message(self, size: int) -> str:
        return (f"the upload is {size / 2**20:.1f} MB; the limit is {self.max_upload_bytes / 2**20:.1f} MB "
                f"(start the server with --max-upload-mb to change it)")

    @staticmethod
    def _query_one(request: Request, key: str) -> str:
        values = request.query.get(key, [])
        if len(values) != 1:
            raise InputError(f"the query needs exactly one '{key}' parameter")
        return values[0]

    @staticmethod
    def _json_body(request: Request) -> dict:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, f"send JSON with 'Content-Type: application/json', not {ctype or 'no type'!r}")
        try:
            body = json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise InputError("the body is not UTF-8 text") from None
        except RecursionError:
            raise InputError("the JSON body is nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}") from None
        except ValueError as exc:  # an integer of more than 4300 digits
            raise InputError(f"the body holds a number with too many digits ({exc})") from None
        if not isinstance(body, dict):
            raise InputError(f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _state_json(self, session: AnnotationSession, state: State) -> dict:
        return {
            "session": session.session_id, "name": session.name,
            "width": session.width, "height": session.height,
            "points": state.points_xy.tolist(),
            "fixed": {str(i): list(xy) for i, xy in state.fixed_xy.items()},
            "confidence": [round(float(c), 4) if math.isfinite(c) else 0.0 for c in state.confidence],
            "least_confident": state.least_confident(),
            **self._check_first(session, state),
            "suggested": list(state.suggested),
            "cobb": cobb_summary(state.points_xy, session.height, self.vertebra_names),
            "can_undo": session.can_undo, "can_redo": session.can_redo, "action": state.action,
            "version": state.version, "model_ms": round(state.seconds * 1000, 1),
            "score_ms": round(state.score_seconds * 1000, 1),
            "saved": True, "persistent": session.session_id.startswith(FOLDER_PREFIX),
            "done": session.session_id.startswith(FOLDER_PREFIX) and self.store.is_done(session.name),
            "notes": getattr(session, "notes", []),
        }


    @staticmethod
    def _check_first(session: AnnotationSession, state: State) -> dict:
        """The error scores and the "Check first" ranking: by the detector's scores when one is loaded,
        else by confidence."""
        scores = session.error_scores(state)
        if scores is None:
            return {"error_scores": None, "check_first": state.least_confident(), "check_first_by": "confidence"}
        return {"error_scores": [round(float(v), 4) if math.isfinite(v) else 0.0 for v in scores],
                "check_first": state.most_suspect(), "check_first_by": "detector"}

    # ---------------------------------------------------------------------------------------------
    # what annotators expect from CVAT and Label Studio: COCO keypoints in and out, the image in its
    # own format, per-image progress
    # ---------------------------------------------------------------------------------------------
    def _annotator_routes(self) -> dict:
        return {("GET", "/api/export_coco"): self._export_coco, ("POST", "/api/import_coco"): self._import_coco}

    def _original_image(self, session: AnnotationSession) -> Response | None:
        """A folder image's own file (JPEG or PNG, as it is) when the browser draws from it exactly the
        pixels the tool decoded; None otherwise (then a PNG of those pixels is sent)."""
        if not (self.worklist and session.session_id.startswith(FOLDER_PREFIX)):
            return None
        try:
            path = self.worklist.path(session.name)
            if path.stat().st_size > 2 * session.width * session.height + 2**16:  # not smaller than a PNG
                return None
            data = path.read_bytes()
        except (KeyError, OSError):
            return None
        content_type = browser_shows_as_is(data)
        if content_type is None:
            return None
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (session.width, session.height):  # the file changed since it was opened
                return None
        return Response(200, data, content_type, {"Cache-Control": "private, max-age=3600"})

    def _checked_count(self, name: str) -> int | None:
        """Points checked (fixed) in the shown state of a folder image; None before its first save."""
        record = self.store.current(name)
        return None if record is None else len(record.fixed_xy)

    def _export_coco(self, request: Request) -> Response:
        """Every folder image with saved points as one COCO keypoints file (attachment)."""
        worklist = self._need_worklist()
        doc = folder_coco(worklist, self.store, self.keypoint_names, self._image_size)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", worklist.images_dir.name).strip("._") or "folder"
        return Response(200, (json.dumps(doc) + "\n").encode(), "application/json",
                        {"Content-Disposition": f'attachment; filename="{stem[:80]}_coco_keypoints.json"'})

    def _image_size(self, name: str) -> tuple[int, int]:
        """(width, height) of a folder image as the tool shows it (an open session's, else decoded)."""
        session = self.sessions.find(f"{FOLDER_PREFIX}{name}")
        if session is not None:
            return session.width, session.height
        rows, cols = self.worklist.read(name).shape
        return cols, rows

    def _import_coco(self, request: Request) -> Response:
        """Points of a COCO keypoints file into the folder's images (matched by file name): one new,
        undoable history entry per image. Checked first as a whole: on any problem nothing is imported."""
        worklist = self._need_worklist()
        try:
            found = read_coco(self._json_body(request), self.predictor.num_keypoints)
        except CocoError as exc:
            raise InputError(f"not imported: {exc}") from None
        known = set(worklist.names())
        matched = [name for name in found if name in known]
        skipped = sorted(set(found) - known)
        if not matched:
            raise InputError(f"not imported: none of the {len(found)} annotated images of the file is in "
                             f"{worklist.images_dir}")
        for name in matched:
            size = self._image_size(name)
            if size != (found[name].width, found[name].height):
                raise InputError(f"not imported: {name} is {size[0]} x {size[1]} pixels here but "
                                 f"{found[name].width} x {found[name].height} in the file")
        for name in matched:
            points = found[name]
            with self._using(f"{FOLDER_PREFIX}{name}") as session, session.lock:
                session.import_points(points.points_xy, points.labelled, points.checked)
                if points.done:
                    session.adopt_version(self.store.set_done(name, True))
        return Response.json({"imported": matched, "skipped": skipped})


# ------------------------------------------------------------------------------------------------------
# sockets
# ------------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: "DemoHTTPServer"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's refinements reuse one connection
    disable_nagle_algorithm = True  # headers and body are two writes: without this the body waits ~40 ms
    timeout = 60  # seconds a client may take to send its request
    server_version = "SpineKeypointDemo"
    sys_version = ""

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method: str) -> None:
        try:
            request, set_cookie = self._read_request(method)
        except (HTTPError, AccessDenied) as exc:
            self.close_connection = True
            self._send(Response.json({"error": exc.message}, exc.status), close=True)
            return
        response = self.server.app.handle(request)
        if set_cookie:
            response.headers["Set-Cookie"] = set_cookie
        self._send(response)

    def _read_request(self, method: str) -> tuple[Request, str | None]:
        """(the request, a Set-Cookie value or None); HTTPError or AccessDenied if refused."""
        srv = self.server
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qs(url.query, keep_blank_values=True)
        set_cookie = srv.guard.check(self.client_address[0], headers, query)
        origin = headers.get("origin")
        if method == "POST" and origin is not None and origin != f"http://{headers.get('host', '')}":
            raise HTTPError(403, f"cross-origin request from {origin!r} refused")
        body = b""
        if method == "POST":
            if "transfer-encoding" in headers:
                raise HTTPError(411, "send the body with a Content-Length (chunked uploads are not supported)")
            try:
                length = int(headers.get("content-length", ""))
                if length < 0:
                    raise ValueError
            except ValueError:
                raise HTTPError(411, "a POST needs a valid Content-Length header") from None
            limit = srv.app.body_limit(url.path)
            if length > limit:
                self._discard(length, limit)
                message = (srv.app._too_large_message(length) if url.path == "/api/predict"
                           else f"request body of {length} bytes exceeds the limit of {limit} bytes")
                raise HTTPError(413, message)
            body = self.rfile.read(length)
            if len(body) != length:
                raise HTTPError(400, "the request body ended early")
        return Request(method, url.path, query, headers, body), set_cookie

    def _discard(self, length: int, limit: int) -> None:
        """Read and drop a refused body (up to a bound), so the client sees the 413 instead of a reset."""
        remaining = min(length, 2 * limit + 2**20)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 2**16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _send(self, response: Response, close: bool = False) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Frame-Options", "DENY")
            headers = {"Cache-Control": "no-store", **response.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code="-", size="-") -> None:
        status = int(code) if str(code).isdigit() else 0
        log.log(logging.WARNING if status >= 400 else logging.DEBUG, '"%s" %s', self.requestline, code)


class DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # pending connections (the default 5 resets the 6th of many clients at once)

    def __init__(self, address, app: DemoApp, allow_remote: bool, token: str | None = None):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app, self.allow_remote = app, allow_remote
        super().__init__(address, _Handler)
        self.port = self.server_address[1]
        self.guard = AccessGuard(self.port, self.server_address[0], allow_remote, token)
        self.url_host, self.token = self.guard.url_host, self.guard.token

    @property
    def url(self) -> str:
        """An address a browser on this computer can open (a wildcard address is not one), with the
        access token when the server needs one."""
        return self.guard.url()

    @property
    def origin(self) -> str:
        """``http://host:port`` without path or token (API clients add ``?token=`` themselves)."""
        return f"http://{self.url_host}:{self.port}"


def create_server(app: DemoApp, host: str = "127.0.0.1", port: int = 8765,
                  allow_remote: bool = False, token: str | None = None) -> DemoHTTPServer:
    """Bind (port 0 = any free port). A non-loopback ``host`` needs ``allow_remote=True``, which also
    makes every request need an access token (``token``, or a new random one: ``server.token``)."""
    if not allow_remote and not (is_loopback(host) or host == "localhost"):
        raise ValueError(f"refusing to listen on {host!r}: the tool serves only this computer unless "
                         f"allow_remote is set (command line: --allow-remote)")
    return DemoHTTPServer((host, port), app, allow_remote, token)
