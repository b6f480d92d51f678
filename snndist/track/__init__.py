"""Where a run's numbers and pictures go: metrics, trackers (metrics.jsonl, W&B),
the pictures W&B shows, matplotlib figures for ``snndist plot``, terminal progress."""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Tracker": "tracker", "JsonlTracker": "tracker", "MultiTracker": "tracker", "NullTracker": "tracker",
    "BackgroundTracker": "tracker", "WandbTracker": "wandb_tracker", "summarize": "metrics",
    "Progress": "progress",
})
