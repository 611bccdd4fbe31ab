"""Interactive keypoint annotation in the browser: fix one point, the model refines the other 67.

    python demo.py                                  # the committed CPU model, http://127.0.0.1:8765/
    python demo.py --checkpoint save/quick/best.pth --port 9000
    python demo.py --detector pretrained/error_detector.pth   # the error detector: "Check first", Auto-fix
    python demo.py --images xrays/                  # annotate a folder; every edit is saved at once
    python demo.py --images xrays/ --export OUT [--all]   # write OUT as a boostnet_labeldata tree, exit
    python demo.py --images xrays/ --export-coco FILE      # write FILE as COCO keypoints JSON, exit

Serves only this computer (127.0.0.1) unless told otherwise; runs on CPU. See demo/server.py for the
JSON API.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from demo import DEFAULT_CHECKPOINT, DEFAULT_DETECTOR  # noqa: E402 - the package demo/ (it shadows this file's name)
from demo.dataset_export import DEFAULT_TEST_SHARE  # noqa: E402

FALLBACK_CONFIG = "config/quick.yaml"  # architecture of the untrained stand-in when no checkpoint exists
DEFAULT_PORT = 8765


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help=f"model file (ours or the authors'); default {DEFAULT_CHECKPOINT}, else the newest "
                             f"save/*/best.pth")
    parser.add_argument("--config", default=None,
                        help="YAML config for a checkpoint that stores none (e.g. the authors' release)")
    parser.add_argument("--detector", default=None, metavar="PATH",
                        help=f"error detector (model/error_detector.py): ranks 'Check first' by its scores and "
                             f"enables Auto-fix; default {DEFAULT_DETECTOR} when present, else none (ranked by "
                             f"confidence, no Auto-fix)")
    parser.add_argument("--no-detector", action="store_true", help=f"do not load {DEFAULT_DETECTOR} even if present")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--allow-remote", action="store_true",
                        help="serve other computers too (needed for a --host other than loopback): every "
                             "request then needs the access token printed in the URL; plain HTTP, so use "
                             "only on a trusted network")
    parser.add_argument("--max-upload-mb", type=float, default=30.0, help="largest accepted image file")
    parser.add_argument("--max-sessions", type=int, default=8, help="images kept in memory at once")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the network (0 = ONNX Runtime: all cores; PyTorch: all cores but "
                             "one, which keeps slow outliers away)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                        help="run the network on PyTorch or on ONNX Runtime (faster on CPU; checked against "
                             "PyTorch at start, within 1e-4); auto = ONNX Runtime when installed")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="open checkpoints that hold pickled objects (only files you trust)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    folder = parser.add_argument_group("annotating a folder")
    folder.add_argument("--images", default=None,
                        help="folder of X-rays (.jpg/.jpeg/.png) to annotate: the page lists them, and every edit "
                             "is saved at once in the annotations folder")
    folder.add_argument("--annotations", default=None,
                        help="folder for the saved work (keypoints.sqlite3) and where existing annotations are "
                             "looked for (<image name>.mat with p2, or the tool's JSON/CSV); None: the --images "
                             "folder")
    folder.add_argument("--export", default=None, metavar="OUT",
                        help="write the images marked done as a boostnet_labeldata tree at OUT (for "
                             "data_preprocessing.py --source OUT) and exit; needs --images")
    folder.add_argument("--all", action="store_true",
                        help="with --export: every image that has points, not only those marked done")
    folder.add_argument("--export-coco", default=None, metavar="FILE",
                        help="write every image with saved points as COCO keypoints JSON (CVAT, Label Studio, "
                             "MMPose) to FILE and exit; needs --images")
    folder.add_argument("--test-share", type=float, default=DEFAULT_TEST_SHARE,
                        help="with --export: share of the images put in the test split (at least one image)")
    args = parser.parse_args(argv)
    if (args.export or args.export_coco or args.annotations or args.all) and not args.images:
        parser.error("--annotations, --export, --export-coco and --all need --images DIR")
    if args.all and not args.export:
        parser.error("--all only applies to --export OUT")
    if not 0 < args.test_share < 1:
        parser.error(f"--test-share must be between 0 and 1, got {args.test_share}")
    if args.detector and args.no_detector:
        parser.error("--detector and --no-detector exclude each other")
    if args.port < 0 or args.port > 65535:
        parser.error("--port must be 0..65535")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.max_upload_mb <= 0 or args.max_sessions < 1:
        parser.error("--max-upload-mb must be positive and --max-sessions at least 1")
    return args


def find_checkpoint(requested: str | None) -> Path | None:
    """The checkpoint to use: the requested one (must exist), the default, or the newest save/*/best.pth."""
    if requested:
        path = Path(requested)
        if not path.is_file():
            raise SystemExit(f"error: checkpoint not found: {path}")
        return path
    default = ROOT / DEFAULT_CHECKPOINT
    if default.is_file():
        return default
    trained = sorted((ROOT / "save").glob("*/best.pth"), key=lambda p: p.stat().st_mtime)
    if trained:
        print(f"note: the default model {DEFAULT_CHECKPOINT} is not there; using the newest trained one, "
              f"{trained[-1].relative_to(ROOT)}")
        return trained[-1]
    return None


def load_predictor(args):
    from demo.predictor import KeypointPredictor
    from util import load_config

    config = load_config(args.config) if args.config else None
    path = find_checkpoint(args.checkpoint)
    if path is None:
        print(f"WARNING: no model found ({DEFAULT_CHECKPOINT} is missing and save/ holds no best.pth).\n"
              f"         Starting with an UNTRAINED network ({FALLBACK_CONFIG}): the interface works but the "
              f"points are meaningless.\n         Train one (bash train.sh) or pass --checkpoint PATH.")
        return KeypointPredictor.untrained_from_config(config or load_config(ROOT / FALLBACK_CONFIG))
    return KeypointPredictor.from_checkpoint(path, config, allow_pickle=args.allow_pickle)


def load_checker(args, predictor):
    """The error detector (demo.detector.PointChecker) or None. An explicit --detector that is missing or
    unreadable is an error (BadInput, one line naming it); a broken default is skipped with a warning."""
    from demo.detector import PointChecker
    from misc.errors import BadInput

    if args.no_detector:
        return None
    if args.detector:
        return PointChecker.from_checkpoint(args.detector, predictor)
    default = ROOT / DEFAULT_DETECTOR
    if not default.is_file():
        return None
    try:
        return PointChecker.from_checkpoint(default, predictor)
    except BadInput as exc:
        print(f"WARNING: {exc}; starting without an error detector")
        return None


def open_folder(args):
    """(Worklist, AnnotationStore) of --images/--annotations; ValueError/StoreError with a message."""
    from demo.store import STORE_NAME, AnnotationStore, StoreError
    from demo.worklist import Worklist

    worklist = Worklist(args.images, args.annotations)
    if not worklist.names():
        raise ValueError(f"{worklist.images_dir}: no .jpg, .jpeg or .png images in this folder")
    worklist.annotations_dir.mkdir(parents=True, exist_ok=True)
    store = AnnotationStore(worklist.annotations_dir / STORE_NAME)
    try:
        store.check_folder(worklist.images_dir, worklist.names())
    except StoreError:
        store.close()
        raise
    return worklist, store


def export_main(args) -> int:
    """--export: the annotated images as a raw AASCE tree; no model needed."""
    from demo.dataset_export import ExportError, export_folder
    from demo.images import ImageError
    from demo.store import StoreError
    from demo.worklist import AnnotationFileError, ImageMissing

    try:
        worklist, store = open_folder(args)
        report = export_folder(worklist, store, Path(args.export), every=args.all, test_share=args.test_share)
    except (ValueError, OSError, StoreError, ExportError, ImageError, AnnotationFileError, ImageMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report['path']}: {report['training']} training and {report['test']} test images")
    print(f"next: {report['command']}")
    return 0


def export_coco_main(args) -> int:
    """--export-coco: the saved points as one COCO keypoints file; no model needed."""
    import json

    from demo.coco import folder_coco
    from demo.images import ImageError
    from demo.session import keypoint_names
    from demo.store import StoreError
    from misc.cobb import NUM_KEYPOINTS

    out = Path(args.export_coco)
    try:
        if out.exists():
            raise ValueError(f"{out}: already exists; choose a new file for the export")
        worklist, store = open_folder(args)
        doc = folder_coco(worklist, store, keypoint_names(NUM_KEYPOINTS))
        out.write_text(json.dumps(doc) + "\n")
    except (ValueError, OSError, StoreError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {len(doc['images'])} images with points (COCO keypoints JSON)")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.export:
        return export_main(args)
    if args.export_coco:
        return export_coco_main(args)
    folder = None
    if args.images:
        from demo.store import StoreError

        try:
            folder = open_folder(args)
        except (ValueError, OSError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    import torch

    from demo.server import DemoApp, create_server

    from demo.predictor import default_threads

    torch.set_num_threads(args.threads or default_threads("torch"))
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:  # a bad checkpoint, config or detector, or weights that predict NaN, stop here with one line
        predictor = load_predictor(args)
        predictor.warm_up()
        checker = load_checker(args, predictor)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = "torch"
    if args.backend != "torch":
        from demo.onnx_backend import OnnxBackendError, onnx_runtime_available, use_onnx_runtime

        if args.backend == "onnx" or onnx_runtime_available():
            onnx_threads = args.threads or default_threads("onnx")
            try:
                use_onnx_runtime(predictor, threads=onnx_threads)
                backend, threads = "ONNX Runtime", onnx_threads
            except OnnxBackendError as exc:
                if args.backend == "onnx":
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                print(f"note: {exc}; using PyTorch")
    if backend != "torch":
        predictor.warm_up()  # the first ONNX Runtime call is slow: pay it before the first user does
    worklist, store = folder or (None, None)
    app = DemoApp(predictor, max_sessions=args.max_sessions, max_upload_bytes=int(args.max_upload_mb * 2**20),
                  worklist=worklist, store=store, checker=checker)
    try:
        server = create_server(app, args.host, args.port, allow_remote=args.allow_remote)
    except (ValueError, OSError) as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"model: {predictor.source} ({predictor.model_name}, {predictor.size_rc[0]}x{predictor.size_rc[1]}, "
          f"{backend}, {threads} CPU threads), ready in {time.perf_counter() - start:.1f} s")
    print(f"error detector: {checker.source} ('Check first' by its scores, Auto-fix on)" if checker else
          "error detector: none ('Check first' by confidence, Auto-fix off; --detector PATH loads one)")
    if worklist is not None:
        print(f"folder: {worklist.images_dir} ({len(worklist.names())} images); work saved in {store.path}")
    if args.allow_remote:
        print(f"WARNING: --allow-remote: other computers that can reach {args.host}:{server.port} may connect. "
              f"Anyone with the URL below (its access token) can read and change every annotation, and the "
              f"connection is plain HTTP (not encrypted): use only on a trusted network.")
        for url in server.guard.remote_urls():
            print(f"From another computer: {url}")
    print(f"Open {server.url} in a browser (Ctrl+C stops the server)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
