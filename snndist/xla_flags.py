"""XLA flags for snndist's step, added to ``XLA_FLAGS`` when snndist is imported, before JAX starts a backend.

``--xla_cpu_copy_insertion_use_region_analysis=true``: XLA's CPU compiler
copies a loop's carried value when it cannot prove that updating it in
place is safe; its region analysis proves more of them safe. In the LIF
layer's forward loop that removes a copy of the voltage and of the step
counter at every step. The loop body is left with 8 operations, the most
XLA's CPU runtime runs one after another instead of on its concurrent
executor. The SHD-scale train step went from 253 to 211 ms (medians of six
interleaved pairs, BENCHMARKS.md), with the same results bit for bit. It is
a CPU flag: other backends ignore it.

A flag the user already names in ``XLA_FLAGS`` keeps the user's value. In a
process whose JAX started before snndist was imported, the flags do not
apply.
"""
from __future__ import annotations

import os
from typing import MutableMapping

FLAGS = {"--xla_cpu_copy_insertion_use_region_analysis": "true"}


def add_xla_flags(env: MutableMapping[str, str] = os.environ) -> None:
    """Append each of ``FLAGS`` to ``env["XLA_FLAGS"]`` that it does not name already."""
    current = env.get("XLA_FLAGS", "")
    named = {flag.split("=", 1)[0] for flag in current.split()}
    missing = [f"{name}={value}" for name, value in FLAGS.items() if name not in named]
    if missing:
        env["XLA_FLAGS"] = " ".join([*current.split(), *missing])
