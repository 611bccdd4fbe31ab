"""Annotation sessions: one image, the points a person fixed, and the history of predictions.

Pure of HTTP, so the refine logic is testable alone:

    session = AnnotationSession("id", "scan.jpg", gray, predictor)   # predicts with no fixed point
    state = session.refine({26: (412.5, 980.0)})                     # point 26 fixed at (x, y)
    state.points_xy[26] == (412.5, 980.0)                            # exactly, always
    session.undo(); session.reset()

Coordinates in a session are (x, y) in ORIGINAL image pixels (x = column, y = row), as in AASCE's
``p2``; the grid of the network is (row, col) and only ``demo.predictor`` sees it. A refinement is one
step of the protocol's model revision with the fixed points as clicks (see ``demo.predictor``); the
returned points are the network's for every point the person has not fixed and the person's own
positions, unchanged, for the fixed ones.

With an error detector (``demo.detector.PointChecker``) every new set of points gets the detector's
scores (``State.error_scores``, higher = more likely wrong), which then rank "Check first", and
``auto_fix`` makes one automatic revision round an undoable action whose moved points are suggestions
(``State.suggested``): predicted, not fixed.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from demo.predictor import KeypointPredictor
from misc.frames import grid_rc_to_original_xy, original_xy_to_grid_rc

__all__ = ["InputError", "NoDetector", "SessionNotFound", "NothingToUndo", "VersionConflict", "State", "AnnotationSession",
           "SessionStore", "parse_fixed", "keypoint_names", "vertebra_names", "NUM_LEAST_CONFIDENT"]

NUM_LEAST_CONFIDENT = 5  # points marked for the person to check first
MAX_HISTORY = 200  # states kept for undo
PROBS_BUDGET_BYTES = 32 * 2**20  # heatmaps kept per session (float16) as previous-heatmap inputs for undo
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")  # AASCE order within a vertebra
_SPINE = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]


class InputError(ValueError):
    """A request's content is wrong; the message says what, for a person (HTTP 400)."""


class NoDetector(InputError):
    """Auto-fix asked of a server that has no error detector loaded (HTTP 400)."""


class SessionNotFound(KeyError):
    """Unknown or expired session id (HTTP 410: the edit it carried was not saved)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown session"


class NothingToUndo(ValueError):
    """Undo at the first state or redo at the last (HTTP 409)."""


class VersionConflict(RuntimeError):
    """An edit made on a version that is no longer the current one: someone else (another tab) changed
    the image since (HTTP 409 with the current state). Nothing was changed."""

    def __init__(self, session: "AnnotationSession", sent: int):
        super().__init__(f"{session.name} was changed elsewhere (version {session.current.version}; this edit "
                         f"was made on version {sent}): nothing was changed, reload it")
        self.session, self.sent = session, sent


def vertebra_names(num_keypoints: int) -> list[str]:
    """T1..L5 for the 68 AASCE points (4 corners per vertebra); V1.. for other counts."""
    count = num_keypoints // 4
    return list(_SPINE) if count == len(_SPINE) else [f"V{i + 1}" for i in range(count)]


def keypoint_names(num_keypoints: int) -> list[str]:
    """'T1 top-left', 'T1 top-right', ... in point order."""
    if num_keypoints % 4:
        return [f"point {i}" for i in range(num_keypoints)]
    return [f"{v} {c}" for v in vertebra_names(num_keypoints) for c in CORNERS]


def _finite_number(value) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an integer beyond the float range (e.g. 401 digits)
        return False


def parse_fixed(obj, num_keypoints: int, width: int, height: int) -> dict[int, tuple[float, float]]:
    """Validate ``{"<index>": [x, y], ...}`` from JSON -> {index: (x, y)}; InputError says what is wrong.

    Indices are decimal integers 0..K-1 without sign or leading zeros; x, y are finite numbers in
    original pixels inside the image (0 <= x <= width, 0 <= y <= height). Values are kept exactly.
    """
    if not isinstance(obj, dict):
        raise InputError(f"'fixed' must be an object mapping point indices to [x, y], got {type(obj).__name__}")
    fixed: dict[int, tuple[float, float]] = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and len(key) <= len(str(num_keypoints)) and key.isdecimal() and key.isascii()
                and str(int(key)) == key and int(key) < num_keypoints):
            raise InputError(f"'fixed' key {key!r:.40} is not a point index 0..{num_keypoints - 1}")
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_finite_number(v) for v in value)):
            raise InputError(f"'fixed'[{key!r}] must be [x, y] with two finite numbers, got {value!r:.80}")
        x, y = float(value[0]), float(value[1])
        if not (0 <= x <= width and 0 <= y <= height):
            raise InputError(f"'fixed'[{key!r}] = [{x}, {y}] lies outside the {width} x {height} image")
        fixed[int(key)] = (x, y)
    return dict(sorted(fixed.items()))


@dataclass
class State:
    """What the person sees after one action, plus the heatmaps the next refinement starts from."""

    points_xy: np.ndarray  # (K, 2) float64 original pixels; fixed points exactly as given
    fixed_xy: dict[int, tuple[float, float]]
    confidence: np.ndarray  # (K,) peak probability of each predicted heatmap
    probs: torch.Tensor | None  # (K, rows, cols) float16; dropped for old states (memory budget)
    action: str  # "predict", "load", "refine", "accept", "reset", "import" or "autofix"
    seconds: float = 0.0  # model time of the action
    version: int = 0  # the image's change count when this state was shown (the store's, for a folder image)
    seq: int | None = None  # position in the image's saved history (increasing); None until saved
    suggested: tuple[int, ...] = ()  # points an auto-fix moved (predicted, not fixed), until the next prediction
    error_scores: np.ndarray | None = None  # (K,) the error detector's scores of points_xy; None: not computed
    score_seconds: float = 0.0  # time the detector took for error_scores

    def least_confident(self, count: int = NUM_LEAST_CONFIDENT) -> list[int]:
        """Indices of the ``count`` not-fixed points whose heatmap peaks are lowest, lowest first."""
        free = [i for i in np.argsort(self.confidence, kind="stable").tolist() if i not in self.fixed_xy]
        return free[:count]

    def most_suspect(self, count: int = NUM_LEAST_CONFIDENT) -> list[int]:
        """Indices of the ``count`` not-fixed points the error detector scores highest, highest first
        (``error_scores`` must be computed)."""
        order = np.argsort(-self.error_scores, kind="stable").tolist()
        return [i for i in order if i not in self.fixed_xy][:count]


@dataclass
class AnnotationSession:
    """One image being annotated. Methods are serialised by a per-session lock (``lock``, re-entrant: hold
    it to read a consistent state around an action).

    ``history`` holds every state in order and ``cursor`` the one shown: undo moves the cursor back,
    redo forward, and a new action drops the states after the cursor (the redo branch) first. Give
    records (from ``demo.store``) as ``saved`` to continue a saved history, or ``loaded`` (points read from an
    existing annotation file) to start from them instead of a first prediction.

    Every edit may carry the ``version`` it was made on: if that is not the current one, VersionConflict
    and nothing changes. With ``on_change`` (a folder image) the store numbers the history entries and
    counts the versions; an action whose save fails is taken back, so memory never runs ahead of the store.
    """

    session_id: str
    name: str
    gray: np.ndarray = field(repr=False)  # uint8 (height, width), what the page shows and the model reads
    predictor: KeypointPredictor = field(repr=False)
    saved: list | None = field(default=None, repr=False)  # demo.store.Record list of a saved history
    cursor_seq: int | None = None  # the saved history's shown entry
    loaded: tuple | None = field(default=None, repr=False)  # (points_xy (K, 2), fixed indices) from a file
    version: int | None = None  # the saved history's version (demo.store); None: counted here from 0
    # called with the session after every change, under its lock; saves ``records()`` and returns (the seq
    # of every history entry, the new version). Raising makes the action fail and takes it back.
    on_change: object = field(default=None, repr=False)
    checker: object = field(default=None, repr=False)  # demo.detector.PointChecker, or None: no error scores

    def __post_init__(self):
        self.height, self.width = (int(v) for v in self.gray.shape)
        self.num_keypoints = self.predictor.num_keypoints
        self.lock = threading.RLock()
        self._image_t = self.predictor.network_image(self.gray)
        rows, cols = self.predictor.size_rc
        probs_bytes = self.num_keypoints * rows * cols * 2
        self._states_with_probs = max(2, PROBS_BUDGET_BYTES // probs_bytes)
        self._version = self.version or 0
        self.history: list[State] = []
        self.cursor = -1
        self._next_seq = 1 + max((r.seq for r in self.saved or []), default=-1)  # without a store only
        with self.lock:
            if self.saved:
                self._restore(self.saved, self.cursor_seq)
            elif self.loaded is not None:
                self._push(self._from_file(*self.loaded))
            else:
                self._push(self._run({}, None, "predict"))
        self.saved = self.loaded = None  # kept only as the history now

    # ---------------------------------------------------------------------------------------------
    @property
    def current(self) -> State:
        return self.history[self.cursor]

    def records(self) -> tuple[list, int | None]:
        """(the history as ``demo.store.Record`` entries, the shown entry's seq), for saving; entries not
        saved yet have seq None (the store numbers them; the shown one is then the last)."""
        from demo.store import Record

        return ([Record(s.seq, s.action, s.points_xy.tolist(), dict(s.fixed_xy), s.confidence.tolist(),
                        list(s.suggested)) for s in self.history], self.current.seq)

    @property
    def can_undo(self) -> bool:
        return self.cursor > 0

    @property
    def can_redo(self) -> bool:
        return self.cursor < len(self.history) - 1

    def check_version(self, version: int | None) -> None:
        """VersionConflict unless ``version`` is None (not sent) or the current one. Call under ``lock``."""
        if version is not None and version != self.current.version:
            raise VersionConflict(self, version)

    def adopt_version(self, version: int) -> None:
        """The image changed outside the history (marked done): ``version`` is current now."""
        with self.lock:
            self._version = self.current.version = version

    def refine(self, fixed_xy: dict[int, tuple[float, float]], version: int | None = None) -> State:
        """Re-predict every point not in ``fixed_xy`` (validated {index: (x, y)} original pixels)."""
        with self.lock:
            self.check_version(version)
            prev = self.current.probs
            if prev is None:  # a state restored by undo or from the store: recompute its heatmaps
                prev = self._run(self.current.fixed_xy, None, "refine").probs
            return self._push(self._run(dict(fixed_xy), prev, "refine"))

    def accept(self, indices: list[int], version: int | None = None) -> State:
        """Mark points as checked where they are now: they become fixed (sent as clicks, never moved by
        the model again). No prediction runs, so nothing else moves either."""
        with self.lock:
            self.check_version(version)
            state = self.current
            fixed = dict(state.fixed_xy)
            for i in indices:
                fixed.setdefault(int(i), (float(state.points_xy[i, 0]), float(state.points_xy[i, 1])))
            return self._push(State(state.points_xy.copy(), dict(sorted(fixed.items())), state.confidence.copy(),
                                    state.probs, "accept", suggested=tuple(i for i in state.suggested if i not in fixed),
                                    error_scores=state.error_scores))

    def undo(self, version: int | None = None) -> State:
        """Back to the state before the last action; NothingToUndo at the first."""
        with self.lock:
            self.check_version(version)
            if not self.can_undo:
                raise NothingToUndo("nothing to undo")
            return self._move(-1)

    def redo(self, version: int | None = None) -> State:
        """Forward again after an undo; NothingToUndo when nothing was undone."""
        with self.lock:
            self.check_version(version)
            if not self.can_redo:
                raise NothingToUndo("nothing to redo")
            return self._move(+1)

    def reset(self, version: int | None = None) -> State:
        """The first prediction again, with no fixed point (undoable)."""
        with self.lock:
            self.check_version(version)
            first = self.history[0]
            return self._push(State(first.points_xy.copy(), dict(first.fixed_xy), first.confidence.copy(),
                                    first.probs, "reset", suggested=first.suggested, error_scores=first.error_scores))

    def auto_fix(self, version: int | None = None) -> State:
        """One automatic revision round on the shown prediction (``demo.detector``): the detector flags the
        highest-scored points not fixed, the corrector proposes places for them, and every point not
        fixed is re-predicted with the fixed points as clicks and the proposals as hints. The flagged
        points become suggestions (predicted, not fixed); undoable like every action. NoDetector without
        a detector."""
        with self.lock:
            self.check_version(version)
            if self.checker is None:
                raise NoDetector("auto-fix needs an error detector, and none is loaded: start demo.py with "
                                 "--detector PATH (a file written by tools/train_error_detector.py)")
            state = self.current
            if len(state.fixed_xy) >= self.num_keypoints:
                raise InputError("every point is fixed: there is nothing for auto-fix to move")
            fixed_rc = {i: self.to_grid_rc(*xy) for i, xy in state.fixed_xy.items()}
            fix = self.checker.auto_fix(self._image_t, self._heatmaps(state), fixed_rc)
            points_xy = self._shown_points(fix.points_rc, state.fixed_xy)
            return self._push(State(points_xy, dict(state.fixed_xy),
                                    fix.confidence.double().numpy(), fix.probs.half(), "autofix", fix.seconds,
                                    suggested=tuple(fix.flagged)))

    def error_scores(self, state: State) -> np.ndarray | None:
        """The detector's scores of ``state``'s points, computed once and kept with the state (so undo and
        redo show them again at no cost); None without a detector. Call under ``lock``."""
        if self.checker is None:
            return None
        if state.error_scores is None:
            start = time.perf_counter()
            points_rc = original_xy_to_grid_rc(state.points_xy, self.predictor.size_rc, (self.height, self.width))
            state.error_scores = self.checker.scores(self._image_t, points_rc, self._heatmaps(state))
            state.score_seconds = time.perf_counter() - start
        return state.error_scores

    # ---------------------------------------------------------------------------------------------
    def to_grid_rc(self, x: float, y: float) -> tuple[float, float]:
        row, col = original_xy_to_grid_rc([x, y], self.predictor.size_rc, (self.height, self.width))
        return float(row), float(col)

    def _run(self, fixed_xy: dict, prev_probs: torch.Tensor | None, action: str) -> State:
        start = time.perf_counter()
        fixed_rc = {i: self.to_grid_rc(*xy) for i, xy in fixed_xy.items()}
        pred = self.predictor.predict(self._image_t, fixed_rc, prev_probs)
        return State(points_xy=self._shown_points(pred.points_rc, fixed_xy), fixed_xy=fixed_xy,
                     confidence=pred.confidence.double().numpy(), probs=pred.probs.half(), action=action,
                     seconds=time.perf_counter() - start)

    def _from_file(self, points_xy: np.ndarray, fixed: list[int]) -> State:
        """The loaded points as the first state; the model still runs (with the fixed ones as clicks) for
        the confidences and the heatmaps the next refinement starts from."""
        points_xy = np.array(points_xy, dtype=np.float64)
        fixed_xy = {int(i): (float(points_xy[i, 0]), float(points_xy[i, 1])) for i in sorted(fixed)}
        predicted = self._run(fixed_xy, None, "load")
        return State(points_xy, fixed_xy, predicted.confidence, predicted.probs, "load", predicted.seconds)

    def _restore(self, records: list, cursor_seq: int | None) -> None:
        for record in records:
            state = State(np.array(record.points_xy, dtype=np.float64),
                          {int(i): (float(x), float(y)) for i, (x, y) in record.fixed_xy.items()},
                          np.array(record.confidence, dtype=np.float64), None, record.action, seq=record.seq,
                          suggested=tuple(int(i) for i in record.suggested))
            self.history.append(state)
        seqs = [s.seq for s in self.history]
        self.cursor = seqs.index(cursor_seq) if cursor_seq in seqs else len(seqs) - 1
        if self.version is None:
            self._version += 1
        self.current.version = self._version

    def _move(self, step: int) -> State:
        self._commit(self.history, self.cursor + step)
        return self.current

    def _shown_points(self, points_rc: torch.Tensor, fixed_xy: dict) -> np.ndarray:
        """(K, 2) original (x, y) of predicted grid points, the fixed points exactly where the person put them."""
        points_xy = grid_rc_to_original_xy(points_rc.double().numpy(), self.predictor.size_rc, (self.height, self.width))
        for index, xy in fixed_xy.items():
            points_xy[index] = xy
        return np.ascontiguousarray(points_xy)

    def _heatmaps(self, state: State) -> torch.Tensor:
        """``state``'s heatmaps; recomputed for a state restored by undo or from the store (dropped)."""
        return state.probs if state.probs is not None else self._run(state.fixed_xy, None, "refine").probs

    def _push(self, state: State) -> State:
        self.error_scores(state)  # a new set of points is scored when it is made (kept for undo)
        history = self.history[:self.cursor + 1] + [state]  # a new action after undo drops the redo branch
        if len(history) > MAX_HISTORY:
            del history[1]  # keep the first prediction: reset returns to it
        self._commit(history, len(history) - 1)
        for old in self.history[1:-self._states_with_probs]:
            old.probs = None
        return state

    def _commit(self, history: list[State], cursor: int) -> None:
        """Make (history, cursor) the session's, saved first when there is a store: if the save fails,
        nothing changes (the error propagates)."""
        before = self.history, self.cursor
        self.history, self.cursor = history, cursor
        try:
            if self.on_change is None:
                for state in history:
                    if state.seq is None:  # never reused: a dropped redo branch's entries are not it
                        state.seq, self._next_seq = self._next_seq, self._next_seq + 1
                version = self._version + 1
            else:
                seqs, version = self.on_change(self)
                for state, seq in zip(history, seqs):
                    state.seq = seq
        except BaseException:
            self.history, self.cursor = before
            raise
        self._version = self.current.version = version


    # ---------------------------------------------------------------------------------------------
    # points from another tool (COCO keypoints import)
    # ---------------------------------------------------------------------------------------------
    def import_points(self, points_xy: np.ndarray, labelled: list[int], checked: list[int]) -> State:
        """A new (undoable) state from imported points: ``labelled`` points where given, ``checked`` ones
        fixed (clicks), every other point predicted with the checked ones as clicks."""
        points_xy = np.asarray(points_xy, dtype=np.float64)
        with self.lock:
            fixed_xy = {int(i): (float(points_xy[i, 0]), float(points_xy[i, 1])) for i in sorted(checked)}
            predicted = self._run(fixed_xy, None, "import")
            points = predicted.points_xy.copy()
            points[list(labelled)] = points_xy[list(labelled)]
            return self._push(State(np.ascontiguousarray(points), fixed_xy, predicted.confidence, predicted.probs,
                                    "import", predicted.seconds))


class SessionStore:
    """Sessions in memory: the ``max_sessions`` most recently used are kept, least recently used dropped.

    A request uses a session between ``get(id, use=True)`` (or ``find``/``add`` with ``use=True``) and
    ``release``: while any request uses it, that object stays the one ``find`` and ``get`` give for its id,
    even if it was dropped from the kept ones meanwhile. So a folder image reopened from the store never
    has two live objects, each saving its own idea of the history."""

    def __init__(self, max_sessions: int = 8):
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, AnnotationSession] = OrderedDict()
        self._in_use: dict[str, list] = {}  # id -> [session, number of requests using it]
        self._lock = threading.Lock()

    def add(self, session: AnnotationSession, use: bool = False) -> None:
        with self._lock:
            held = self._in_use.get(session.session_id)
            if held is not None and held[0] is not session:
                raise RuntimeError(f"session {session.session_id!r} is already open and in use")
            self._sessions[session.session_id] = session
            self._sessions.move_to_end(session.session_id)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            if use:
                self._use(session)

    def get(self, session_id, use: bool = False) -> AnnotationSession:
        session = self.find(session_id, use)
        if session is None:
            raise SessionNotFound(
                "this image is no longer open on the server, so the last edit was NOT saved: open the "
                f"image again (the server keeps the {self.max_sessions} most recent uploads in memory; "
                "images of a folder opened with --images are saved and reopen by themselves)")
        return session

    def find(self, session_id, use: bool = False) -> AnnotationSession | None:
        """The session, or None (no error); ``use``: the caller uses it until ``release``."""
        if not isinstance(session_id, str):
            return None
        with self._lock:
            held = self._in_use.get(session_id)
            session = held[0] if held is not None else self._sessions.get(session_id)
            if session is not None:
                if session_id in self._sessions:
                    self._sessions.move_to_end(session_id)
                if use:
                    self._use(session)
            return session

    def release(self, session: AnnotationSession) -> None:
        """A request that used ``session`` is over."""
        with self._lock:
            held = self._in_use.get(session.session_id)
            if held is not None and held[0] is session:
                held[1] -= 1
                if held[1] == 0:
                    del self._in_use[session.session_id]

    def _use(self, session: AnnotationSession) -> None:
        self._in_use.setdefault(session.session_id, [session, 0])[1] += 1

    def discard(self, session_id: str) -> None:
        """Drop from the kept sessions (requests using it keep it until they end)."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
