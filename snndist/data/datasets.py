"""The datasets ``data.kind`` names: each has ``load(indices) -> (spikes, labels)``."""
from snndist.config import DataConfig
from snndist.data.synthetic import SyntheticSpikes


def make_dataset(cfg: DataConfig, split: str = "train", default_seed: int = 0):
    """The dataset ``cfg.kind`` names; ``default_seed`` (train.seed) where ``cfg.seed`` is None."""
    if cfg.kind == "synthetic":
        return SyntheticSpikes(cfg, split, default_seed)
    raise ValueError(f"data.kind={cfg.kind!r}: unknown dataset kind")
