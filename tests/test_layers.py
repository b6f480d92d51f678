"""The layers in the README hold: ``lint-imports`` checks the contracts in pyproject.toml,
and fails when a lower layer imports a higher one."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, broken", [
    ("model/neurons.py", "import snndist.cli", "Layers: nothing lower imports anything higher"),
    ("model/network.py", "import ray", "The math imports no config, I/O, Ray or W&B"),
    ("config.py", "import jax", "Config and what the coordinator uses load without JAX"),
    ("dist/coordinator.py", "import jax", "The coordinator imports no JAX (its workers do, in their own processes)"),
])
def test_a_planted_import_breaks_a_contract(tmp_path, module, planted, broken):
    shutil.copytree(REPO / "snndist", tmp_path / "snndist", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / "snndist" / module
    path.write_text(path.read_text() + f"\n{planted}\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} BROKEN" in result.stdout, result.stdout
