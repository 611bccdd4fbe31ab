"""The document checks use the test suite's helpers (shared/ paths, skips, one torch thread): tests/conftest.py,
loaded by path so that this folder runs on its own."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

_spec = importlib.util.spec_from_file_location("_tests_conftest", _ROOT / "tests" / "conftest.py")
_tests_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests_conftest)

AASCE = _tests_conftest.AASCE
require = _tests_conftest.require
one_torch_thread = _tests_conftest.one_torch_thread
real_aasce_data = _tests_conftest.real_aasce_data
pytest_terminal_summary = _tests_conftest.pytest_terminal_summary
