"""util.reuse_freed_memory: large tensors freed every step are reused, not mapped and zeroed afresh."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 20 training-step-like cycles: allocate a 36 MB tensor (the click maps of a batch of 4), write it, free it;
# prints the minor page faults the cycles cost
CYCLES = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import util
torch.set_num_threads(1)
applied = util.reuse_freed_memory() if {tuned} else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    maps = torch.ones(4, 68, 256, 128)
    del maps
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt tuning is for glibc")


def _faults(tuned: bool, env=None) -> tuple[str, int]:
    """Run the cycles in a fresh process (mallopt is process-wide); without ``env``, with no MALLOC_* set."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CYCLES.format(root=str(ROOT), tuned=tuned)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    pages_per_tensor = 4 * 68 * 256 * 128 * 4 // 4096
    applied, tuned = _faults(True)
    _, default = _faults(False)
    assert applied == "True"
    assert default > 15 * pages_per_tensor  # glibc maps the tensor afresh each cycle: every page faults again
    assert tuned < 8 * pages_per_tensor     # the first cycles fault their pages in, most later ones reuse them


def test_a_malloc_variable_set_by_the_person_is_left_alone():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_ARENA_MAX"] = "2"
    applied, faults = _faults(True, env)
    assert applied == "False" and faults > 15 * 4 * 68 * 256 * 128 * 4 // 4096
