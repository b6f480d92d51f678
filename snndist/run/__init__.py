"""A training run end to end: the loop (logging, checkpoints, recovery, stop signals),
starting or resuming a run, and reports (eval, plot) on a run directory."""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "fit": "loop", "train": "launch", "resume_config": "launch", "evaluate_run": "report", "plot_run": "report",
})
