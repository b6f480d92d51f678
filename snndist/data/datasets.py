"""The datasets ``data.kind`` names: each has ``len()`` and ``load(indices) -> (spikes, labels)``."""
from snndist.config import DataConfig
from snndist.data.synthetic import SyntheticSpikes

DATASETS = {"synthetic": SyntheticSpikes}  # data.kind -> the dataset class


def make_dataset(cfg: DataConfig, split: str = "train", default_seed: int = 0):
    """The dataset ``cfg.kind`` names; ``default_seed`` (train.seed) where ``cfg.seed`` is None."""
    return DATASETS[cfg.kind](cfg, split, default_seed)
