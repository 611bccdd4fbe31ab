"""Drive the revision protocol over a data loader and turn traces into metrics and arrays."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from misc.frames import grid_to_original
from engine.revision import COORD_KINDS, choice_clicker, clicks_to_reach, mre_per_image, run_revisions
from model.predictor import Predictor, check_finite

REVISIONS = ("model", "manual")
FRAMES = ("pixel", "mm")  # "mm": original pixels on AASCE (no pixel spacing), millimetres with a spacing


@torch.inference_mode()
def evaluate(net, loader, config, device, max_clicks: int, progress: bool = True) -> dict:
    """Run model and manual revision for 0..max_clicks clicks on every image of ``loader``.

    Returns arrays (numpy) keyed like ``model_sargmax_rc`` (N, C+1, K, 2) on the network grid,
    ``model_clicks`` (N, C), plus ``true_rc``, ``raw_size_rc``, ``spacing_rc``, ``names``. Raises
    NonFinitePrediction (naming the batch) when the network predicts NaN or infinite heatmaps.
    """
    net = getattr(net, "module", net)
    was_training = net.training
    net.eval()
    predictor = Predictor(net, config)
    size_rc = predictor.size_rc
    parts: dict[str, list] = {}
    for index, batch in enumerate(tqdm(loader, desc=f"evaluate 0..{max_clicks} clicks", disable=not progress,
                                       leave=False)):
        image = batch["image"].to(device)
        true_rc = batch["coords_rc"].to(device)
        raw, spacing = batch["raw_size_rc"].to(device), batch["spacing_rc"].to(device)
        clicker, choice_kind = choice_clicker(true_rc, config.Train.decision_metric, size_rc, raw, spacing)
        predict = predictor.bind(image, true_rc)

        confidence = []  # per predict call = per click of model revision (manual revision never predicts)

        def checked(clicked, last_probs, where=f"on evaluation batch {index} (images {list(batch['name'])})"):
            probs = check_finite(predict(clicked, last_probs), where)  # argmax of NaN maps looks finite
            confidence.append(peak_probability(probs).cpu())
            return probs

        traces = run_revisions(checked, predictor.decode, clicker, max_clicks, choice_kind)
        parts.setdefault("model_confidence", []).append(torch.stack(confidence, 1))
        for revision, trace in zip(REVISIONS, traces):
            for kind in COORD_KINDS:
                parts.setdefault(f"{revision}_{kind}_rc", []).append(trace.stacked(kind).cpu())
            parts.setdefault(f"{revision}_clicks", []).append(trace.clicks().cpu())
        parts.setdefault("true_rc", []).append(true_rc.cpu())
        parts.setdefault("raw_size_rc", []).append(raw.cpu())
        parts.setdefault("spacing_rc", []).append(spacing.cpu())
        parts.setdefault("names", []).extend(batch["name"])
    net.train(was_training)
    out = {key: (np.array(v) if key == "names" else torch.cat(v).numpy()) for key, v in parts.items()}
    out["image_size_rc"] = np.array(size_rc)
    return out


def peak_probability(probs: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) sigmoid heatmaps -> (B, K) the highest probability of each keypoint's map."""
    return probs.flatten(2).amax(-1)


def per_image_errors(arrays: dict, revision: str, kind: str, frame: str) -> np.ndarray:
    """(N, C+1) mean radial error per image and click count."""
    to_t = torch.from_numpy
    return mre_per_image(to_t(arrays[f"{revision}_{kind}_rc"]), to_t(arrays["true_rc"]),
                         tuple(arrays["image_size_rc"].tolist()), to_t(arrays["raw_size_rc"]),
                         to_t(arrays["spacing_rc"]), frame=frame).numpy()


def summarise(arrays: dict, noc_thresholds=()) -> dict:
    """results.json content: {"model": {metric: [per click]}, "manual": {...}, "noc": {...}}."""
    results: dict = {revision: {} for revision in REVISIONS}
    for revision in REVISIONS:
        for kind in COORD_KINDS:
            for frame in FRAMES:
                per_image = per_image_errors(arrays, revision, kind, frame)
                results[revision][f"{kind}_{frame}_MRE"] = [float(v) for v in per_image.mean(0)]
    results["noc"] = {}
    for threshold in noc_thresholds:
        entry = {}
        for revision in REVISIONS:
            per_image = torch.from_numpy(per_image_errors(arrays, revision, "sargmax", "mm"))
            noc, failed = clicks_to_reach(per_image, float(threshold))
            entry[revision] = {"mean_clicks": float(noc.float().mean()), "not_reached": int(failed.sum())}
        results["noc"][f"{threshold:g}"] = entry
    results["num_images"] = int(len(arrays["names"]))
    results["max_clicks"] = int(arrays["model_sargmax_rc"].shape[1] - 1)
    return results


def original_frame(arrays: dict, key: str) -> np.ndarray:
    """Coordinates of ``key`` (N, ..., 2) rescaled to original pixels (x pixel spacing)."""
    return grid_to_original(torch.from_numpy(arrays[key]), tuple(arrays["image_size_rc"].tolist()),
                            torch.from_numpy(arrays["raw_size_rc"]), torch.from_numpy(arrays["spacing_rc"])).numpy()
