"""Drive the revision protocol over a data loader and turn traces into metrics and arrays."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from misc.frames import grid_to_original
from engine.revision import (AUTO_REVISION, COORD_KINDS, REVISIONS, choice_clicker, clicks_to_reach, mre_per_image,
                             revisions_in, run_auto_revisions, run_revisions)
from model.auto_revision import with_settings
from model.predictor import Predictor, check_finite

FRAMES = ("pixel", "mm")  # "mm": original pixels on AASCE (no pixel spacing), millimetres with a spacing


@torch.inference_mode()
def evaluate(net, loader, config, device, max_clicks: int, progress: bool = True, reviser=None,
             auto_rounds: int = 0, auto_between_clicks: bool = True) -> dict:
    """Run model and manual revision for 0..max_clicks clicks on every image of ``loader``.

    Returns arrays (numpy) keyed like ``model_sargmax_rc`` (N, C+1, K, 2) on the network grid,
    ``model_clicks`` (N, C), plus ``true_rc``, ``raw_size_rc``, ``spacing_rc``, ``names``. Raises
    NonFinitePrediction (naming the batch) when the network predicts NaN or infinite heatmaps.

    With ``auto_rounds`` > 0 it also runs model revision with that many automatic rounds of ``reviser``
    (a model.auto_revision.AutoReviser; its detector and corrector, predicting with ``net``) after the
    0-click prediction and, when ``auto_between_clicks``, after every later one
    (engine.revision.run_auto_revisions), and adds ``auto_hargmax_rc``, ``auto_sargmax_rc``,
    ``auto_clicks`` (shaped like the model ones) and ``error_scores`` (N, K): the detector's scores of
    the 0-click prediction. With ``auto_rounds == 0`` the reviser is not used.
    """
    if auto_rounds < 0:
        raise ValueError(f"auto_rounds must be >= 0, got {auto_rounds}")
    if auto_rounds and reviser is None:
        raise ValueError("auto_rounds > 0 needs a reviser (model.auto_revision.AutoReviser)")
    net = getattr(net, "module", net)
    was_training = net.training
    net.eval()
    predictor = Predictor(net, config)
    size_rc = predictor.size_rc
    if auto_rounds:
        reviser = with_settings(reviser, predictor=predictor)  # the evaluated network re-predicts
    parts: dict[str, list] = {}
    description = f"evaluate 0..{max_clicks} clicks" + (f", {auto_rounds} automatic rounds" if auto_rounds else "")
    for index, batch in enumerate(tqdm(loader, desc=description, disable=not progress, leave=False)):
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

        auto_clicker = clicker.fresh()
        traces = run_revisions(checked, predictor.decode, clicker, max_clicks, choice_kind)
        parts.setdefault("model_confidence", []).append(torch.stack(confidence, 1))
        named = list(zip(REVISIONS, traces))
        if auto_rounds:
            auto_trace, scores = auto_revision_trace(
                reviser, image, true_rc, auto_clicker, max_clicks, auto_rounds, auto_between_clicks, choice_kind,
                f"in automatic revision on evaluation batch {index} (images {list(batch['name'])})")
            named.append((AUTO_REVISION, auto_trace))
        for revision, trace in named:
            for kind in COORD_KINDS:
                parts.setdefault(f"{revision}_{kind}_rc", []).append(trace.stacked(kind).cpu())
            parts.setdefault(f"{revision}_clicks", []).append(trace.clicks().cpu())
        if auto_rounds:
            parts.setdefault("error_scores", []).append(scores.float().cpu())
        parts.setdefault("true_rc", []).append(true_rc.cpu())
        parts.setdefault("raw_size_rc", []).append(raw.cpu())
        parts.setdefault("spacing_rc", []).append(spacing.cpu())
        parts.setdefault("names", []).extend(batch["name"])
    net.train(was_training)
    out = {key: (np.array(v) if key == "names" else torch.cat(v).numpy()) for key, v in parts.items()}
    out["image_size_rc"] = np.array(size_rc)
    return out


def auto_revision_trace(reviser, image, true_rc, clicker, max_clicks: int, rounds: int, between_clicks: bool,
                        choice_kind: str, where: str):
    """engine.revision.run_auto_revisions for one batch with ``reviser`` (AutoReviser): (trace, scores).
    The reviser gets the click positions only: the truth at clicked points, zeros elsewhere."""
    def clicks_at(clicked):
        return torch.where(clicked[..., None], true_rc, torch.zeros_like(true_rc))

    def predict(clicked, last_probs, state):
        return check_finite(reviser.predict(image, clicks_at(clicked), clicked, state, last_probs), where)

    def auto_round(probs, clicked, state):
        probs, state = reviser.round(image, probs, clicks_at(clicked), clicked, state)
        return check_finite(probs, where), state

    state = reviser.start(*true_rc.shape[:2], device=true_rc.device)
    return run_auto_revisions(predict, auto_round, reviser.predictor.decode, clicker, max_clicks, rounds, state,
                              between_clicks, choice_kind)


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
    """results.json content: {"model": {metric: [per click]}, "manual": {...}, "noc": {...}}, and "auto"
    like "model" when the arrays hold automatic revision."""
    revisions = revisions_in(arrays)
    results: dict = {revision: {} for revision in revisions}
    for revision in revisions:
        for kind in COORD_KINDS:
            for frame in FRAMES:
                per_image = per_image_errors(arrays, revision, kind, frame)
                results[revision][f"{kind}_{frame}_MRE"] = [float(v) for v in per_image.mean(0)]
    results["noc"] = {}
    for threshold in noc_thresholds:
        entry = {}
        for revision in revisions:
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
