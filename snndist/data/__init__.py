"""Datasets: index-addressable samples, ``load(indices) -> (spikes, labels)``."""
from snndist.config import DataConfig
from snndist.data.order import Shard, batch_indices, data_position, plan_shards
from snndist.data.synthetic import SyntheticSpikes


def make_dataset(cfg: DataConfig, split: str = "train", default_seed: int = 0):
    """The dataset ``cfg.kind`` names; ``default_seed`` (train.seed) where ``cfg.seed`` is None."""
    if cfg.kind == "synthetic":
        return SyntheticSpikes(cfg, split, default_seed)
    raise ValueError(f"data.kind={cfg.kind!r}: unknown dataset kind")


__all__ = ["Shard", "SyntheticSpikes", "batch_indices", "data_position", "make_dataset", "plan_shards"]
