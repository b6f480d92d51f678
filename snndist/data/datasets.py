"""The datasets ``data.kind`` names, one split at a time.

A dataset has ``len()`` and ``load(indices) -> (spikes, labels, dropped)``:
spikes ``[n, T, num_inputs]`` (bool, or uint8 spike counts), labels ``[n]``,
and per sample the recorded events that fell past the time window. It also
tells ``name``, ``num_inputs``, ``num_classes``, ``timesteps``, ``dtype``,
``density`` (the fraction of active bins, which chooses the input encoding)
and ``max_events`` (a safe bound of events per sample, or None where only
reading every sample would tell).
"""
from __future__ import annotations

from snndist.config import DataConfig
from snndist.data.binning import BinnedEvents
from snndist.data.splits import Subset, held_out
from snndist.data.synthetic import SyntheticSpikes
from snndist.errors import DataError


def _shd(cfg: DataConfig, split: str, seed: int):
    from snndist.data.heidelberg import HeidelbergFile

    return BinnedEvents(HeidelbergFile(cfg.path, cfg.kind, split, cfg.channel_pool), cfg)


def _nmnist(cfg: DataConfig, split: str, seed: int):
    from snndist.data.nmnist import NMNISTFolder

    return BinnedEvents(NMNISTFolder(cfg.path, split, cfg.channel_pool), cfg)


def _events(cfg: DataConfig, split: str, seed: int):
    from snndist.data.event_files import EventFile

    return BinnedEvents(EventFile(cfg.path, split, cfg.num_inputs, cfg.channel_pool), cfg)


def _tonic(cfg: DataConfig, split: str, seed: int):
    from snndist.data.tonic_events import TonicDataset

    return BinnedEvents(TonicDataset(cfg.tonic_dataset, cfg.path, split, cfg.channel_pool), cfg)


def _encoded(cfg: DataConfig, split: str, seed: int):
    from snndist.data.encoded import EncodedStatic

    return EncodedStatic(cfg, split, seed)


# data.kind -> the opener of one split (cfg, split, default seed): readers load on first use
DATASETS = {"synthetic": SyntheticSpikes, "shd": _shd, "ssc": _shd, "nmnist": _nmnist, "events": _events,
            "tonic": _tonic, "encoded": _encoded}


def make_dataset(cfg: DataConfig, split: str = "train", default_seed: int = 0):
    """Split ``split`` of the dataset ``cfg.kind`` names; ``default_seed`` (train.seed) where ``cfg.seed`` is None.

    With ``data.valid_fraction``, the valid split is that fraction of the training split, always the
    same samples, and the train split the rest.
    """
    if split not in ("train", "valid", "test"):
        raise DataError(f"no split {split!r}: the splits are train, valid and test")
    if cfg.valid_fraction > 0 and split in ("train", "valid"):
        whole = DATASETS[cfg.kind](cfg, "train", default_seed)
        kept, held = held_out(len(whole), cfg.valid_fraction)
        return Subset(whole, held if split == "valid" else kept, f"{whole.name} ({split})")
    return DATASETS[cfg.kind](cfg, split, default_seed)
