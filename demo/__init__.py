"""Interactive annotation tool: a person fixes points on a spine X-ray, the model re-predicts the rest.

Pieces (RITM-style separation; see STYLE.md):
  demo.predictor  the network and one prediction given fixed points (the protocol's model revision)
  demo.detector   the error detector: per-point error scores ("Check first") and auto-fix rounds
  demo.session    one image's state: fixed points, history for undo/redo/reset, input validation
  demo.images     upload decoding (JPEG/PNG, in memory, bounded) and the bundled synthetic examples
  demo.export     JSON / CSV / AASCE .mat / COCO exports of one image
  demo.coco       COCO keypoints JSON (CVAT, Label Studio, MMPose) out and in
  demo.worklist   a folder of X-rays and the annotation files that already exist for them
  demo.store      the SQLite store that keeps every edit of a folder (history and undo position)
  demo.dataset_export  an annotated folder as a boostnet_labeldata tree for data_preprocessing.py
  demo.onnx_backend    the network on ONNX Runtime (checked against PyTorch at start)
  demo.server     the HTTP server and JSON API (standard library only); the page is in demo/static
The command line is ``python demo.py`` at the repository root.
"""

# The committed CPU model, relative to the repository root: the one place to change when it moves.
DEFAULT_CHECKPOINT = "pretrained/aasce_cpu.pth"
# The committed error detector (model/error_detector.py), used when present unless --detector says otherwise.
DEFAULT_DETECTOR = "pretrained/error_detector.pth"
