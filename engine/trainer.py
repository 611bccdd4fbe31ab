"""The training loop of the paper's procedure: device and processes, data, optimizer, epochs,
validation, checkpoints and resume. ``train.py`` parses the command line and calls ``train``.

One run = one folder ``<save_root>/<name>`` (engine/experiment.py): the resolved config, log.txt,
metrics.jsonl, TensorBoard events, best.pth (lowest validation metric) and last.pth (everything a
resume needs: weights, optimizer, schedule, mixed-precision scaler, weight average, counters).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import util
from dataset.keypoint_dataset import KeypointDataset, collate, read_training_table
from dataset.morph_pairs import load_morph_pairs
from engine.evaluation import evaluate, summarise
from engine.experiment import CONFIG_FILE, LAST_CHECKPOINT, Experiment, draw_keypoints
from engine.training import is_localisation_epoch, training_step
from engine.weight_average import WeightAverage
from misc.errors import BadInput
from model import build_model, load_weights, read_checkpoint, save_checkpoint
from model.predictor import NonFinitePrediction
from model.weights import non_finite_tensors

# parameter names of the click pathway (the official weight names)
CLICK_PATHWAY_PREFIXES = ("hintmap_encoder.", "ritm_hrnet.HintEncSENet.")


class TrainingDiverged(RuntimeError):
    """Loss, weights or validation predictions became NaN or infinite; nothing of this epoch is saved."""


@dataclass
class RunPlan:
    """What a command trains: the config (with the run's own config on resume), the run folder and,
    on resume, its last checkpoint (read once)."""
    config: object
    save_root: Path
    name: str
    resume_state: object = None
    changed: dict = field(default_factory=dict)  # on resume: dotted key -> (run's value, --set value)

    @property
    def run_dir(self) -> Path:
        return self.save_root / self.name


@dataclass
class TrainOptions:
    """How to train, not what: none of these changes the result except ``init_weights``."""
    device: str | None = None  # --device; None = the config's MISC.device, falling back to the CPU
    amp: bool = False
    sync_bn: bool = False
    threads: int | None = None
    time_limit_min: float = 0.0
    stop_after_epoch: int = 0
    progress: bool = True
    init_weights: str | None = None


def plan_run(config_path, overrides=(), name: str | None = None, save_dir=None, resume: bool = False,
             check_free: bool = True) -> RunPlan:
    """Resolve the config and run folder; on resume, read last.pth and the run's own config (the
    overrides then apply on top of it). A new run refuses a folder that already holds one."""
    config = util.load_config(config_path, overrides)
    name = name or Path(config_path).stem
    save_root = Path(save_dir or config.PATH.SAVE)
    run_dir = save_root / name
    last = run_dir / LAST_CHECKPOINT
    if resume:
        if not last.is_file():
            raise BadInput(f"--resume: no checkpoint at {last}")
        state = read_checkpoint(last)  # read once; refused when broken
        own = util.load_config(run_dir / CONFIG_FILE)
        config = util.load_config(run_dir / CONFIG_FILE, overrides)
        check_resumable(state.entries, last, config)  # before anything is written to the run folder
        changed = changed_settings(own, config)
        fixed = [key for key in changed if fixed_on_resume(key, own)]
        if fixed:
            listed = ", ".join(f"{key} (the run's {changed[key][0]!r}, --set {changed[key][1]!r})" for key in fixed)
            raise BadInput(f"--resume: {listed} cannot change in a run: {last} holds the optimizer, schedule and "
                           f"network made with the run's value; start a new run from its weights instead "
                           f"(--init-weights {last})")
        return RunPlan(config, save_root, name, state, changed)
    if check_free and last.exists():
        raise BadInput(f"{run_dir} already holds a run: pass --resume to continue it or choose another --name")
    return RunPlan(config, save_root, name)


# Settings that the state restored from last.pth embodies (the network, the optimizer with its learning
# rates and moments): an override of one of them on resume would be written to config.yaml but not used
FIXED_ON_RESUME = ("Model.", "Optimizer.", "Dataset.image_size", "Dataset.num_keypoint")


def fixed_on_resume(key: str, config) -> bool:
    """True when ``key`` cannot change when a run resumes (with a cosine schedule its length, Train.epoch,
    is part of the restored schedule too)."""
    return key.startswith(FIXED_ON_RESUME) or (key == "Train.epoch" and config.Optimizer.scheduler == "cosine")


def changed_settings(before, after, prefix: str = "") -> dict:
    """Dotted key -> (old, new) for every leaf of config ``after`` that differs from ``before``."""
    changed = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changed.update(changed_settings(old, value, f"{prefix}{key}."))
        elif value != old:
            changed[f"{prefix}{key}"] = (old, value)
    return changed


class ShardedEpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, split evenly across ranks (padded by wrapping around)."""

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch = 0
        self.per_rank = math.ceil(size / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.size) if self.shuffle
                 else np.arange(self.size))
        order = np.resize(order, self.per_rank * self.world)
        return iter(order[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


def parameter_checksum(net) -> str:
    """A digest of every parameter and buffer, to check that DDP ranks hold the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in getattr(net, "module", net).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def setup_distributed(device_name: str, explicit: bool = True):
    """(rank, world, device) for the device name (--device when ``explicit``, else the config's
    MISC.device, which may name a device this machine lacks: then the CPU, with a notice);
    initialises the process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, util.select_device(device_name, fallback_to_cpu=not explicit)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    wants_cuda = device_name.startswith("cuda")
    if wants_cuda and explicit and not torch.cuda.is_available():
        raise BadInput(f"--device {device_name} under torchrun, but CUDA is not available: pass --device cpu "
                       f"to train with CPU processes (gloo)")
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda and local >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise BadInput(f"torchrun started a process with LOCAL_RANK {local}, but this machine has {count} CUDA "
                       f"device(s): start at most {count} processes per node (--nproc_per_node {count}), "
                       f"or pass --device cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def parameter_groups(net, lr: float, click_lr_mult: float) -> list[dict]:
    """One group for the network; with click_lr_mult != 1 a second group for the click pathway
    (click encoder and gating block) at lr * click_lr_mult."""
    if click_lr_mult == 1.0:
        return [{"params": list(net.parameters()), "lr": lr}]
    click, rest = [], []
    for name, param in net.named_parameters():
        (click if name.startswith(CLICK_PATHWAY_PREFIXES) else rest).append(param)
    return [{"params": rest, "lr": lr}, {"params": click, "lr": lr * click_lr_mult}]


def build_optimizer(net, config):
    kind = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[config.Optimizer.optimizer]
    groups = parameter_groups(net, config.Optimizer.lr, config.Optimizer.click_lr_mult)
    optimizer = kind(groups, lr=config.Optimizer.lr, weight_decay=config.Optimizer.weight_decay)
    scheduler = None
    if config.Optimizer.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.Train.epoch)
    return optimizer, scheduler


def validation_metric(results: dict, config) -> float:
    """Mean over clicks 0..Train.val_clicks of the decision metric for model revision; a non-finite
    value counts as the worst (inf), so it is never the best."""
    metric = float(np.mean(results["model"][config.Train.decision_metric]))
    return metric if math.isfinite(metric) else float("inf")


def click_gain(results: dict, metric: str = "sargmax_mm_MRE") -> float:
    """Mean over clicks 1..N of manual minus model revision MRE: how much the network's re-prediction
    of the unclicked points beats fixing only the clicked ones (> 0 = the clicks steer)."""
    model, manual = np.asarray(results["model"][metric]), np.asarray(results["manual"][metric])
    return float(np.mean(manual[1:] - model[1:])) if len(model) > 1 else 0.0


def validation_due(epoch: int, last_epoch: int, every: int) -> bool:
    """Validate every ``every`` epochs and always after the last epoch of this session, so that a
    stopped or finished run has measured its final weights."""
    return epoch % every == 0 or epoch == last_epoch


def all_finite(tensors) -> torch.Tensor:
    """One boolean tensor: every floating-point tensor in ``tensors`` holds only finite values. One
    fused reduction (a single device wait when read) instead of one per tensor; a norm that overflows
    counts as not finite, which ``non_finite_tensors`` then tells apart."""
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    if not floats:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(torch._foreach_norm(floats)).isfinite().all()


def optimizer_step(net, loss: torch.Tensor, optimizer, scaler, grad_clip: float) -> torch.Tensor:
    """Backward, the L2 norm of all gradients before clipping (logged, so that a clip threshold can be
    chosen from a run's own gradients), the clip when ``grad_clip`` > 0, and the step; returns the norm
    as a device tensor (reading it waits for the device)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # the true gradients (a no-op without amp), for the norm and the clip
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def train_one_epoch(net, loader, optimizer, config, morph_pairs, device, epoch, rank, scaler, amp, progress,
                    average=None, clicks: bool = True):
    """One pass over the loader (without any click when ``clicks`` is False). Numbers stay on the device
    during the epoch; each step waits for it once, to stop at the first non-finite loss or weight before
    anything is saved."""
    net.train()
    inner = getattr(net, "module", net)
    weights = [t for t in inner.state_dict().values() if t.is_floating_point()]
    rng = np.random.default_rng([config.Train.seed, epoch, rank, 1])
    limit = min(config.Train.max_batches_per_epoch or len(loader), len(loader))
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, bce_main, bce_aux, morph
    grad_norms = []  # before clipping, one 0-dim tensor per step
    count = 0
    bar = tqdm(loader, total=limit, desc=f"epoch {epoch}", disable=not progress, leave=False)
    for index, batch in enumerate(bar):
        if index >= limit:
            break
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            terms = training_step(net, batch, config, morph_pairs, rng, device, clicks)
        grad_norm = optimizer_step(net, terms.total, optimizer, scaler, config.Train.grad_clip)
        finite = torch.stack([torch.isfinite(terms.total.detach()), all_finite(weights)]).tolist()  # one wait
        if not finite[0]:
            raise TrainingDiverged(f"loss became {terms.total.item()} at epoch {epoch}, batch {index} "
                                   f"(images {batch['name']})")
        if not finite[1]:
            broken = non_finite_tensors(inner.state_dict())
            if broken:
                raise TrainingDiverged(f"{len(broken)} weight tensors (first: {broken[0]}) became NaN or infinite "
                                       f"after the step of epoch {epoch}, batch {index} (images {batch['name']})")
        if average is not None:
            average.update(inner)
        count += 1
        grad_norms.append(grad_norm.detach().reshape(()).to(torch.float64))
        totals += torch.stack([terms.total.detach(), terms.bce_main, terms.bce_aux, terms.morph]).to(totals)
        if progress and (count == 1 or count % 10 == 0):
            bar.set_postfix(loss=f"{totals[0].item() / count:.5f}")
    values = (totals / max(count, 1)).tolist()
    metrics = {f"train/{k}": v for k, v in zip(("loss", "bce_main", "bce_aux", "morph"), values)}
    norms = torch.stack(grad_norms) if grad_norms else torch.zeros(0, dtype=torch.float64)
    norms = norms[norms.isfinite()]  # with amp a step with overflowing gradients is skipped anyway
    if len(norms):  # L2 norm of all gradients before clipping: mean and largest over the epoch's steps
        metrics.update({"train/grad_norm": float(norms.mean()), "train/grad_norm_max": float(norms.max())})
    return metrics


def run_morph_pairs(config, device):
    """The pairs and triplets of the morphology loss as device tensors (None when Morph.use is off: then
    nothing reads them); a missing or malformed Morph.pairs is refused naming the key."""
    if not config.Morph.use:
        return None
    try:
        pairs = load_morph_pairs(config.Morph.pairs, config.Dataset.num_keypoint)
    except (OSError, ValueError) as exc:
        raise BadInput(f"Morph.pairs: {exc}") from None
    return tuple(torch.as_tensor(p, device=device) for p in pairs)


def checkpoint_bytes_needed(net, config) -> int:
    """Disk space for a run's checkpoints, from above: last.pth holds the weights, Adam's two moments per
    parameter and, with Train.ema_decay, the weight average; best.pth the weights (the size of each file
    is checked again when it is written, model.weights.save_checkpoint)."""
    from model.weights import CHECKPOINT_OVERHEAD_BYTES, checkpoint_size_estimate

    weights = checkpoint_size_estimate(net.state_dict()) - CHECKPOINT_OVERHEAD_BYTES
    moments = 2 * sum(p.numel() * p.element_size() for p in net.parameters())
    average = weights if config.Train.ema_decay > 0 else 0
    return 2 * CHECKPOINT_OVERHEAD_BYTES + 2 * weights + moments + average


def train(plan: RunPlan, options: TrainOptions) -> int:
    """Train ``plan`` to the end of its schedule (or the options' stop); 0 when done, 2 when training
    diverged (the last good checkpoints are kept)."""
    config, run_dir = plan.config, plan.run_dir
    init_weights = (read_checkpoint(options.init_weights)
                    if options.init_weights and plan.resume_state is None else None)
    rank, world, device = setup_distributed(options.device or config.MISC.device, explicit=bool(options.device))
    torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) // world))
    if device.type == "cpu":
        util.reuse_freed_memory()
    if rank == 0:
        util.check_output_dir(run_dir)  # before the data and the network are built
    util.seed_everything(config.Train.seed)
    # every entry and array of the trained tables is checked against the config (refused when it does not fit)
    train_set = KeypointDataset(config, "train", table=read_training_table(config))
    val_set = KeypointDataset(config, "val")
    morph_pairs = run_morph_pairs(config, device)
    net = build_model(config).to(device)
    if init_weights is not None:
        load_weights(net, init_weights)  # refused when it does not fit: before the run folder is made
    if rank == 0:  # one last.pth (weights, optimizer moments, weight average) and one best.pth
        util.check_free_space(run_dir, checkpoint_bytes_needed(net, config), "the run's checkpoints")
    # every input read and checked: only now the run folder is made
    run = Experiment(plan.save_root, plan.name, writer=rank == 0, tensorboard=config.MISC.TB)
    amp = options.amp and device.type == "cuda"
    if options.amp and not amp:
        run.log("notice: --amp needs CUDA; training in float32")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once

    sampler = ShardedEpochSampler(len(train_set), config.Train.seed, rank, world)
    # workers are made anew each epoch (not persistent): they copy the dataset's epoch for augmentation;
    # no more of them than cores (the results do not depend on the count)
    workers = min(config.MISC.num_workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
    loader_args = {"batch_size": config.Train.batch_size, "collate_fn": collate, "num_workers": workers,
                   "pin_memory": device.type == "cuda"}
    train_loader = torch.utils.data.DataLoader(train_set, sampler=sampler, **loader_args)
    val_loader = torch.utils.data.DataLoader(val_set, **loader_args)
    if world > 1 and options.sync_bn:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer, scheduler = build_optimizer(net, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = {"epoch": 0, "best_metric": float("inf"), "best_epoch": 0, "patience": 0}
    if plan.resume_state is not None:
        state = _restore(plan, net, optimizer, scheduler, scaler, amp, device)
        run.log(f"resumed {run.dir} after epoch {state['epoch']}")
        if plan.changed:
            run.log("resumed with changed settings (used from now on): "
                    + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in plan.changed.items()))
    elif init_weights is not None:
        run.log(f"initialised the model from {options.init_weights}")
    for done in run.start_after(state["epoch"]):
        run.log(done)
    average = WeightAverage(net, config.Train.ema_decay) if config.Train.ema_decay > 0 else None
    if average is not None and plan.resume_state is not None:  # present: check_resumable
        average.load_state_dict(plan.resume_state.entries["weight_average"])
    validated_net = average.module if average is not None else net  # what validation measures and best.pth holds
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    run.save_config(config)
    n_params = sum(p.numel() for p in net.parameters())
    trained_on = "+".join(config.Train.train_splits)
    run.log(f"run {run.dir}: {len(train_set)} {trained_on} / {len(val_set)} val images, {n_params:,} parameters, "
            f"device {device}, world size {world}")
    by_metric = config.Train.checkpoint == "best"  # else best.pth = the schedule's last epoch (no early stop)

    progress = rank == 0 and options.progress
    stop_reason = f"reached Train.epoch={config.Train.epoch}"
    last_epoch = config.Train.epoch
    if 0 < options.stop_after_epoch < config.Train.epoch:
        last_epoch = options.stop_after_epoch
        stop_reason = f"--stop-after-epoch {last_epoch}; continue with --resume"
    session_start = time.time()
    for epoch in range(state["epoch"] + 1, last_epoch + 1):
        started = time.time()
        sampler.set_epoch(epoch)
        localising = is_localisation_epoch(epoch, config.Train)
        train_set.set_epoch(epoch, occlusion=not localising)
        torch.manual_seed(config.Train.seed * 100_003 + epoch * 101 + rank)  # dropout: repeatable per epoch
        try:
            train_metrics = train_one_epoch(net, train_loader, optimizer, config, morph_pairs, device, epoch, rank,
                                            scaler, amp, progress, average, clicks=not localising)
            if scheduler is not None:
                scheduler.step()
            if world > 1:
                _share_rank0_buffers(net, average)
            arrays = None
            if validation_due(epoch, last_epoch, config.Train.val_every):
                try:
                    arrays = evaluate(validated_net, val_loader, config, device, config.Train.val_clicks,
                                      progress=progress)
                except NonFinitePrediction as exc:
                    raise TrainingDiverged(f"after epoch {epoch}: {exc}") from None
        except TrainingDiverged as exc:
            kept = (f"{run.best_checkpoint.name} (epoch {state['best_epoch']}) and {run.last_checkpoint.name} "
                    f"(epoch {state['epoch']}) are unchanged" if state["epoch"] else "no checkpoint was written")
            run.log(f"stopped: {exc}; nothing of epoch {epoch} was saved, {kept}")
            run.close()
            if world > 1:
                dist.destroy_process_group()
            return 2
        state["epoch"] = epoch
        metrics = {**train_metrics, "lr": optimizer.param_groups[0]["lr"]}
        summary = f"epoch {epoch}/{config.Train.epoch} loss {train_metrics['train/loss']:.5f}"
        metric = None
        if arrays is not None:
            metric, val_metrics, improved = _record_validation(arrays, state, config)
            metrics.update(val_metrics)
            if rank == 0 and improved and by_metric:
                save_checkpoint(run.best_checkpoint, validated_net, epoch=epoch,
                                metric={config.Train.decision_metric: metric}, config=config)
            if rank == 0 and (epoch == 1 or epoch % 5 == 0):
                pictures = [draw_keypoints(val_set[i]["image"].numpy(), arrays["true_rc"][i],
                                           arrays["model_sargmax_rc"][i, 0]) for i in range(min(3, len(val_set)))]
                run.add_images("val/predictions_0click", np.stack(pictures), epoch)
            summary += (f" val {config.Train.decision_metric}(0..{config.Train.val_clicks} clicks) {metric:.2f} "
                        f"click gain {metrics['val/click_gain']:+.2f}{' *best*' if improved else ''}")
        if not by_metric and epoch == config.Train.epoch and rank == 0:
            save_checkpoint(run.best_checkpoint, validated_net, epoch=epoch, config=config,
                            metric={config.Train.decision_metric: metric} if metric is not None else {})
        metrics["epoch_seconds"] = time.time() - started
        run.record_metrics(epoch, metrics)
        run.log(f"{summary} ({metrics['epoch_seconds']:.0f}s)")
        if rank == 0:
            _save_last(run.last_checkpoint, net, optimizer, scheduler, scaler if amp else None, average, state,
                       config, epoch)
        if by_metric and state["patience"] > config.Train.patience:
            stop_reason = f"early stop: no improvement for {state['patience']} epochs"
            break
        if options.time_limit_min and time.time() - session_start > options.time_limit_min * 60:
            stop_reason = f"time limit of {options.time_limit_min:g} min reached; continue with --resume"
            break
    if by_metric:
        run.log(f"done ({stop_reason}); best {config.Train.decision_metric} {state['best_metric']:.2f} "
                f"at epoch {state['best_epoch']} -> {run.best_checkpoint}")
    else:
        held = (f"epoch {config.Train.epoch} -> {run.best_checkpoint}" if state["epoch"] == config.Train.epoch
                else f"nothing yet (it is written after epoch {config.Train.epoch})")
        run.log(f"done ({stop_reason}); Train.checkpoint 'last': best.pth holds {held}")
    if world > 1:
        checksums = [None] * world
        dist.all_gather_object(checksums, parameter_checksum(net))
        run.log(f"parameter checksums per rank: {checksums} -> "
                f"{'identical' if len(set(checksums)) == 1 else 'DIFFERENT'}")
        dist.barrier()
        dist.destroy_process_group()
    run.close()
    return 0


def _share_rank0_buffers(net, average) -> None:
    """BatchNorm statistics drift apart per rank: use rank 0's everywhere, so that every rank validates
    the same model and stops together."""
    for module in (net.module, average.module if average is not None else None):
        if module is not None:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)


def _record_validation(arrays: dict, state: dict, config) -> tuple[float, dict, bool]:
    """(validation metric, the metrics to log, improved?) of one validation; updates the run's best
    metric, best epoch and patience in ``state``."""
    results = summarise(arrays)
    metric = validation_metric(results, config)
    improved = metric < state["best_metric"]
    if improved:
        state.update(best_metric=metric, best_epoch=state["epoch"], patience=0)
    else:
        state["patience"] += config.Train.val_every
    logged = {"val/metric": metric, "val/sargmax_mm_MRE_0click": results["model"]["sargmax_mm_MRE"][0],
              "val/click_gain": click_gain(results)}
    return metric, logged, improved


def _save_last(path, net, optimizer, scheduler, scaler, average, state: dict, config, epoch: int) -> None:
    """last.pth: everything a resume needs (``scaler`` None without mixed precision)."""
    extra = {"weight_average": average.state_dict()} if average is not None else {}
    if scaler is not None:
        extra["grad_scaler"] = scaler.state_dict()
    save_checkpoint(path, net, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict() if scheduler is not None else {},
                    train_state=state, config=config, epoch=epoch, **extra)


def check_resumable(entries: dict, last: Path, config) -> None:
    """Refuse (naming the file) a last.pth that cannot continue a run with ``config``."""
    if "optimizer" not in entries or "train_state" not in entries:
        raise BadInput(f"--resume: {last} holds no optimizer state (it is not a run's last.pth, e.g. a "
                       f"best.pth or an exported model): start a new run with --init-weights {last}")
    if config.Train.ema_decay > 0 and "weight_average" not in entries:
        raise BadInput(f"--resume: {last} holds no weight average, but Train.ema_decay is "
                       f"{config.Train.ema_decay}: resume with the run's own config")


def _restore(plan: RunPlan, net, optimizer, scheduler, scaler, amp: bool, device) -> dict:
    """Load last.pth into the network, optimizer, schedule and (with --amp) the loss scaler; the
    run's counters. Optimizer tensors follow the parameters to ``device``."""
    check_resumable(plan.resume_state.entries, plan.run_dir / LAST_CHECKPOINT, plan.config)
    entries = load_weights(net, plan.resume_state)
    optimizer.load_state_dict(entries["optimizer"])
    if scheduler is not None and entries.get("scheduler"):
        scheduler.load_state_dict(entries["scheduler"])
    if amp and entries.get("grad_scaler"):
        scaler.load_state_dict(entries["grad_scaler"])
    return dict(entries["train_state"])
