"""Drive the revision protocol over a data loader and turn traces into metrics and arrays."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from misc.heatmaps import click_maps, gaussian_heatmaps
from misc.metrics import grid_to_original
from misc.revision import COORD_KINDS, clicks_to_reach, mre_per_image, run_revisions

REVISIONS = ("model", "manual")
FRAMES = ("pixel", "mm")


def network_predictor(net, image, true_rc, config):
    """predict(clicked, prev) for ``run_revisions``: sigmoid of the main logits for these clicks."""
    targets = gaussian_heatmaps(true_rc, config.Dataset.image_size, config.Dataset.heatmap_std)

    def predict(clicked, prev_probs):
        return torch.sigmoid(net.predict(image, click_maps(targets, clicked), prev_probs))

    return predict


@torch.inference_mode()
def evaluate(net, loader, config, device, max_clicks: int, progress: bool = True) -> dict:
    """Run model and manual revision for 0..max_clicks clicks on every image of ``loader``.

    Returns arrays (numpy) keyed like ``model_sargmax_rc`` (N, C+1, K, 2) on the network grid,
    ``model_clicks`` (N, C), plus ``true_rc``, ``raw_size_rc``, ``spacing_rc``, ``names``.
    """
    net = getattr(net, "module", net)
    was_training = net.training
    net.eval()
    size_rc = tuple(config.Dataset.image_size)
    parts: dict[str, list] = {}
    for batch in tqdm(loader, desc=f"evaluate 0..{max_clicks} clicks", disable=not progress, leave=False):
        image = batch["image"].to(device)
        true_rc = batch["coords_rc"].to(device)
        raw, spacing = batch["raw_size_rc"].to(device), batch["spacing_rc"].to(device)
        traces = run_revisions(network_predictor(net, image, true_rc, config), true_rc, max_clicks, size_rc,
                               raw, spacing, choice_metric=config.Train.decision_metric,
                               subpixel=config.Dataset.subpixel_decoding,
                               patch_size=config.Dataset.subpixel_decoding_patch_size,
                               prev_only_clicked=config.Model.use_prev_heatmap_only_for_hint_index)
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
    coords = torch.from_numpy(arrays[key])
    shape = coords.shape
    flat = coords.reshape(shape[0], -1, 2)
    out = grid_to_original(flat, tuple(arrays["image_size_rc"].tolist()), torch.from_numpy(arrays["raw_size_rc"]),
                           torch.from_numpy(arrays["spacing_rc"]))
    return out.reshape(shape).numpy()
