"""Shared test fixtures. ``shared/`` (reference tensors, real AASCE copy) lies beside the repo root."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
AASCE = SHARED / "aasce" / "boostnet_labeldata"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Test inputs are tiny: threads gain nothing, and OpenMP threads stall badly on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def require(path: Path, what: str) -> Path:
    """Skip the calling test with a stated reason when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f"{path} not present: {what} needs the project's shared/ folder beside the repository")
    return path


@pytest.fixture(scope="session")
def official_fixture():
    import torch

    path = require(REFERENCE / "official_w8_fixture.pth", "the official numerical fixture")
    # The fixture is our own trusted reference file and holds Python lists next to tensors.
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="session")
def synthetic_tree(tmp_path_factory) -> Path:
    """A small synthetic ``boostnet_labeldata`` tree: 12 training + 4 test images at 0.4x the real size.

    Shared by the whole session: treat it as read-only (copy it with shutil.copytree to modify it).
    """
    from dataset.synthetic import generate_tree

    root = tmp_path_factory.mktemp("synthetic") / "boostnet_labeldata"
    generate_tree(root, num_train=12, num_test=4, seed=0, scale=0.4)
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """A small generated boostnet_labeldata tree, preprocessed like the real data: (raw root, table dir)."""
    from dataset.preprocess import preprocess
    from dataset.synthetic import generate_tree

    root = tmp_path_factory.mktemp("synthetic")
    raw = root / "boostnet_labeldata"
    generate_tree(raw, num_train=14, num_test=4, seed=3, scale=0.5)
    preprocess(raw, root, size_row_col=(512, 256), val_size=4, seed=0, workers=1)
    return raw, root / "dataset16_512"


@pytest.fixture(scope="session")
def real_aasce_data(tmp_path_factory) -> Path:
    """../shared/aasce preprocessed once per session (skipped without it); -> the data folder."""
    import subprocess

    raw = require(AASCE, "the real AASCE splits (labels and images)")
    target = tmp_path_factory.mktemp("aasce")
    subprocess.run([sys.executable, str(REPO_ROOT / "data_preprocessing.py"), "--source", str(raw), "--target",
                    str(target), "--no-progress"], check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return target / "dataset16_512"


def tiny_overrides(table_dir, save_dir=None):
    """A network and input small enough to train for a few steps in seconds on a CPU."""
    sets = [f"PATH.DATA.IMAGE={table_dir}/", f"PATH.DATA.TABLE={table_dir}/",
            "Dataset.image_size=[64,32]", "Dataset.heatmap_std=1.5", "Dataset.subpixel_decoding_patch_size=5",
            "Model.width=8", "Model.ocr_width=16", "Model.small=true", "Train.batch_size=4",
            "Train.epoch=2", "Train.max_batches_per_epoch=2", "Train.val_clicks=1", "MISC.TB=false",
            "Optimizer.lr=0.002"]
    if save_dir is not None:
        sets.append(f"PATH.SAVE={save_dir}/")
    return sets


# What a skipped check needs, recognised in its skip reason: the groups the closing summary names.
OFFICIAL_TENSORS = ("the official code's reference tensors (../shared/reference): weight loading, network outputs "
                    "and math compared with the official implementation")
REAL_AASCE = ("the real AASCE copy (../shared/aasce): reading, preprocessing, Cobb angles and morphology pairs "
              "checked on the real images and labels")
SKIP_GROUPS = (("shared/reference", OFFICIAL_TENSORS), ("reference not present", OFFICIAL_TENSORS),
               ("shared/aasce", REAL_AASCE))


def skip_group(reason: str) -> str:
    for marker, group in SKIP_GROUPS:
        if marker in reason:
            return group
    return reason


def pytest_terminal_summary(terminalreporter):
    """Say which checks did not run here and why (most need the project's shared/ folder)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    groups: dict[str, list[str]] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        groups.setdefault(skip_group(reason.removeprefix("Skipped: ")), []).append(report.nodeid)
    terminalreporter.section(f"{len(skipped)} checks skipped on this machine")
    for group, nodeids in groups.items():
        terminalreporter.write_line(f"{len(nodeids)} need {group}:" if group.startswith("the ")
                                    else f"{len(nodeids)} skipped: {group}:")
        for nodeid in nodeids:
            terminalreporter.write_line(f"    {nodeid}")
