"""Train the interactive keypoint network with the procedure of the paper (README "Training").

    python train.py --config config/quick.yaml --name my_run
    python train.py --config config/quick.yaml --name my_run --resume      # continue after a stop
    torchrun --nproc_per_node 2 train.py --config ...                      # DistributedDataParallel

One folder per run (``PATH.SAVE/<name>``) holds the resolved config, log.txt, metrics.jsonl,
TensorBoard events, best.pth (lowest validation metric) and last.pth (everything needed to resume).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import util
from dataset.keypoint_dataset import KeypointDataset, collate
from misc.errors import BadInput, report_bad_input
from misc.evaluation import evaluate, summarise
from misc.experiment import CONFIG_FILE, LAST_CHECKPOINT, Experiment, draw_keypoints
from misc.morph_pairs import load_morph_pairs
from misc.training import training_step
from misc.weight_average import WeightAverage
from model import build_model, load_weights, read_checkpoint, save_checkpoint
from model.predictor import NonFinitePrediction
from model.weights import non_finite_tensors


class TrainingDiverged(RuntimeError):
    """Loss, weights or validation predictions became NaN or infinite; nothing of this epoch is saved."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/quick.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set Train.batch_size=2 (repeatable)")
    parser.add_argument("--name", help="experiment name (default: the config file's stem)")
    parser.add_argument("--save-dir", help="experiments root (default: PATH.SAVE of the config)")
    parser.add_argument("--resume", action="store_true", help="continue the named run from its last.pth")
    parser.add_argument("--init-weights", metavar="CHECKPOINT",
                        help="start a new run from these model weights (e.g. pretrained/aasce_cpu.pth or a "
                             "run's best.pth; optimizer and schedule start afresh); ignored with --resume")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu', 'cuda', 'cuda:N' (default: MISC.device of the config; 'auto' = CUDA "
                             "when present)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with torchrun: BatchNorm statistics shared across processes (SyncBatchNorm, GPUs)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--time-limit", type=float, default=0, metavar="MINUTES",
                        help="stop cleanly after the epoch that passes this wall-clock budget; "
                             "continue later with --resume (0 = no limit)")
    parser.add_argument("--stop-after-epoch", type=int, default=0, metavar="N",
                        help="stop cleanly after epoch N (the schedule still spans Train.epoch); "
                             "continue later with --resume (0 = run to the end)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config this command would train with (the file with its BASE chain and "
                             "--set applied; with --resume the run's own) as YAML, and exit")
    args = parser.parse_args(argv)
    if args.stop_after_epoch < 0:
        parser.error(f"--stop-after-epoch must be >= 0, got {args.stop_after_epoch}")
    return args


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


def setup_distributed(device_name: str):
    """(rank, world, device) for the device name chosen as --device > MISC.device > 'auto';
    initialises the process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, util.select_device(device_name)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


# parameter names of the click pathway (the official weight names)
CLICK_PATHWAY_PREFIXES = ("hintmap_encoder.", "ritm_hrnet.HintEncSENet.")


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


def train_one_epoch(net, loader, optimizer, config, morph_pairs, device, epoch, rank, scaler, amp, progress,
                    average=None):
    net.train()
    rng = np.random.default_rng([config.Train.seed, epoch, rank, 1])
    limit = config.Train.max_batches_per_epoch or len(loader)
    totals = {"loss": 0.0, "bce_main": 0.0, "bce_aux": 0.0, "morph": 0.0}
    grad_norms = []  # finite ones only: with amp a step with overflowing gradients is skipped anyway
    count = 0
    bar = tqdm(loader, total=min(limit, len(loader)), desc=f"epoch {epoch}", disable=not progress, leave=False)
    for index, batch in enumerate(bar):
        if index >= limit:
            break
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            terms = training_step(net, batch, config, morph_pairs, rng, device)
        if not torch.isfinite(terms.total):
            raise TrainingDiverged(f"loss became {terms.total.item()} at epoch {epoch}, batch {index} "
                                   f"(images {batch['name']})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.unscale_(optimizer)  # the true gradients (a no-op without amp), for the norm and the clip
        if config.Train.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.Train.grad_clip)
        else:  # logged so that a clip threshold can be chosen from a run's own gradients
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])
        scaler.step(optimizer)
        scaler.update()
        broken = non_finite_tensors(getattr(net, "module", net).state_dict())
        if broken:
            raise TrainingDiverged(f"{len(broken)} weight tensors (first: {broken[0]}) became NaN or infinite after "
                                   f"the step of epoch {epoch}, batch {index} (images {batch['name']})")
        if average is not None:
            average.update(getattr(net, "module", net))
        count += 1
        grad_norm = grad_norm.item()  # before clipping
        if math.isfinite(grad_norm):
            grad_norms.append(grad_norm)
        for key, value in (("loss", terms.total.item()), ("bce_main", terms.bce_main),
                           ("bce_aux", terms.bce_aux), ("morph", terms.morph)):
            totals[key] += value
        bar.set_postfix(loss=f"{totals['loss'] / count:.5f}")
    metrics = {f"train/{k}": v / max(count, 1) for k, v in totals.items()}
    if grad_norms:  # L2 norm of all gradients before clipping: mean and largest over the epoch's steps
        metrics.update({"train/grad_norm": sum(grad_norms) / len(grad_norms), "train/grad_norm_max": max(grad_norms)})
    return metrics


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    config = util.load_config(args.config, args.set)
    name = args.name or Path(args.config).stem
    save_root = args.save_dir or config.PATH.SAVE
    run_dir = Path(save_root) / name
    resume_state = None
    if args.resume:
        last = run_dir / LAST_CHECKPOINT
        if not last.is_file():
            raise BadInput(f"--resume: no checkpoint at {last}")
        resume_state = read_checkpoint(last)  # read once; refused when broken
        config = util.load_config(run_dir / CONFIG_FILE, args.set)
    elif (run_dir / LAST_CHECKPOINT).exists() and not args.print_config:
        raise BadInput(f"{run_dir} already holds a run: pass --resume to continue it or choose "
                       f"another --name")
    if args.print_config:
        print(util.config_to_yaml(config), end="")
        return 0
    init_weights = read_checkpoint(args.init_weights) if args.init_weights and not args.resume else None
    if args.device:
        config.MISC.device = args.device
    rank, world, device = setup_distributed(config.MISC.device)
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    if rank == 0:
        util.check_output_dir(run_dir)  # before the data and the network are built
    run = Experiment(save_root, name, writer=rank == 0, tensorboard=config.MISC.TB)
    amp = args.amp and device.type == "cuda"
    if args.amp and not amp:
        run.log("notice: --amp needs CUDA; training in float32")

    util.seed_everything(config.Train.seed)
    train_set = KeypointDataset(config, "train")
    val_set = KeypointDataset(config, "val")
    sampler = ShardedEpochSampler(len(train_set), config.Train.seed, rank, world)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.Train.batch_size, sampler=sampler,
                                               collate_fn=collate, num_workers=config.MISC.num_workers)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.Train.batch_size, collate_fn=collate,
                                             num_workers=config.MISC.num_workers)
    net = build_model(config).to(device)
    if world > 1 and args.sync_bn:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer, scheduler = build_optimizer(net, config)
    morph_pairs = tuple(torch.as_tensor(p, device=device) for p in load_morph_pairs(config.Morph.pairs))
    state = {"epoch": 0, "best_metric": float("inf"), "best_epoch": 0, "patience": 0}
    if resume_state is not None:
        entries = load_weights(net, resume_state)
        optimizer.load_state_dict(entries["optimizer"])
        if scheduler is not None and entries.get("scheduler"):
            scheduler.load_state_dict(entries["scheduler"])
        state = dict(entries["train_state"])
        run.log(f"resumed {run.dir} after epoch {state['epoch']}")
    elif init_weights is not None:
        load_weights(net, init_weights)
        run.log(f"initialised the model from {args.init_weights}")
    average = WeightAverage(net, config.Train.ema_decay) if config.Train.ema_decay > 0 else None
    if average is not None and resume_state is not None:
        if "weight_average" not in resume_state.entries:
            raise BadInput(f"--resume: {run_dir / LAST_CHECKPOINT} holds no weight average, but "
                           f"Train.ema_decay is {config.Train.ema_decay}: resume with the run's own config")
        average.load_state_dict(resume_state.entries["weight_average"])
    validated_net = average.module if average is not None else net  # what validation measures and best.pth holds
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    run.save_config(config)
    n_params = sum(p.numel() for p in net.parameters())
    run.log(f"run {run.dir}: {len(train_set)} train / {len(val_set)} val images, {n_params:,} parameters, "
            f"device {device}, world size {world}")

    progress = rank == 0 and not args.no_progress
    stop_reason = f"reached Train.epoch={config.Train.epoch}"
    last_epoch = config.Train.epoch
    if 0 < args.stop_after_epoch < config.Train.epoch:
        last_epoch = args.stop_after_epoch
        stop_reason = f"--stop-after-epoch {last_epoch}; continue with --resume"
    session_start = time.time()
    for epoch in range(state["epoch"] + 1, last_epoch + 1):
        started = time.time()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        torch.manual_seed(config.Train.seed * 100_003 + epoch * 101 + rank)  # dropout: repeatable per epoch
        try:
            train_metrics = train_one_epoch(net, train_loader, optimizer, config, morph_pairs, device, epoch, rank,
                                            scaler, amp, progress, average)
            if scheduler is not None:
                scheduler.step()
            if world > 1:  # BatchNorm statistics drift apart per rank: use rank 0's everywhere, so that
                for buffer in net.module.buffers():  # every rank validates the same model and stops together
                    dist.broadcast(buffer, 0)
                if average is not None:
                    for buffer in average.module.buffers():
                        dist.broadcast(buffer, 0)
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
        if arrays is not None:
            results = summarise(arrays)
            metric = validation_metric(results, config)
            improved = metric < state["best_metric"]
            if improved:
                state.update(best_metric=metric, best_epoch=epoch, patience=0)
                if rank == 0:
                    save_checkpoint(run.best_checkpoint, validated_net, epoch=epoch,
                                    metric={config.Train.decision_metric: metric}, config=config)
            else:
                state["patience"] += config.Train.val_every
            metrics.update({"val/metric": metric, "val/sargmax_mm_MRE_0click": results["model"]["sargmax_mm_MRE"][0],
                            "val/click_gain": click_gain(results)})
            if rank == 0 and (epoch == 1 or epoch % 5 == 0):
                pictures = [draw_keypoints(val_set[i]["image"].numpy(), arrays["true_rc"][i],
                                           arrays["model_sargmax_rc"][i, 0]) for i in range(min(3, len(val_set)))]
                run.add_images("val/predictions_0click", np.stack(pictures), epoch)
            summary += (f" val {config.Train.decision_metric}(0..{config.Train.val_clicks} clicks) {metric:.2f} "
                        f"click gain {metrics['val/click_gain']:+.2f}{' *best*' if improved else ''}")
        metrics["epoch_seconds"] = time.time() - started
        run.record_metrics(epoch, metrics)
        run.log(f"{summary} ({metrics['epoch_seconds']:.0f}s)")
        if rank == 0:
            extra = {"weight_average": average.state_dict()} if average is not None else {}
            save_checkpoint(run.last_checkpoint, net, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler is not None else {},
                            train_state=state, config=config, epoch=epoch, **extra)
        if state["patience"] > config.Train.patience:
            stop_reason = f"early stop: no improvement for {state['patience']} epochs"
            break
        if args.time_limit and time.time() - session_start > args.time_limit * 60:
            stop_reason = f"time limit of {args.time_limit:g} min reached; continue with --resume"
            break
    run.log(f"done ({stop_reason}); best {config.Train.decision_metric} {state['best_metric']:.2f} "
            f"at epoch {state['best_epoch']} -> {run.best_checkpoint}")
    if world > 1:
        checksums = [None] * world
        dist.all_gather_object(checksums, parameter_checksum(net))
        run.log(f"parameter checksums per rank: {checksums} -> "
                f"{'identical' if len(set(checksums)) == 1 else 'DIFFERENT'}")
        dist.barrier()
        dist.destroy_process_group()
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
