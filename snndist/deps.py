"""Whether this Python can run snndist: its dependencies, found without importing them. Standard library only,
so that it runs first, in any Python (a Ray job's entrypoint may start one that lacks them all).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

#: pyproject.toml's dependencies, as ``import name: distribution`` (a test keeps the two in step).
IMPORTS = {
    "jax": "jax", "jaxlib": "jaxlib", "ml_dtypes": "ml_dtypes", "numpy": "numpy", "optax": "optax", "ray": "ray",
    "orbax.checkpoint": "orbax-checkpoint", "wandb": "wandb", "yaml": "pyyaml", "matplotlib": "matplotlib",
    "rich": "rich", "etils": "etils", "gcsfs": "gcsfs", "h5py": "h5py", "sklearn": "scikit-learn",
    "filelock": "filelock",
}
FIXES = ("install snndist on the cluster's nodes (e.g. its Docker image, see cluster/README.md), or submit with "
         "`snndist submit --pip` to have Ray install its dependencies into the job's environment")


def missing() -> list[str]:
    """The import names of ``IMPORTS`` this Python cannot find."""
    absent = []
    for name in IMPORTS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # orbax.checkpoint without orbax
            found = False
        if not found:
            absent.append(name)
    return absent


def check() -> str | None:
    """The one-line error if this Python lacks a dependency, else None."""
    absent = missing()
    if not absent:
        return None
    more = f" (and {len(absent) - 1} more: {', '.join(absent[1:])})" if len(absent) > 1 else ""
    return (f"the Python running snndist, {sys.executable}, cannot import {absent[0]} (from the "
            f"{IMPORTS[absent[0]]} package){more}: it lacks snndist's dependencies; {FIXES}")


def requirements() -> list[str]:
    """snndist's dependencies as pip requirements, with the ranges its installed metadata pins
    (``importlib.metadata.PackageNotFoundError`` where snndist is not installed)."""
    return [line for line in importlib.metadata.requires("snndist") or [] if "extra ==" not in line]
