"""Where a run lives: its directory (local, shared, or gs://) and its Orbax checkpoints."""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Checkpointer": "checkpoint", "open_run_dir": "rundir", "run_path": "rundir",
})
