"""Datasets (index-addressable samples), the sample order, shards and encodings.

``datasets.make_dataset`` builds one; ``order`` plans which samples each step
and worker read; ``events`` and ``loader`` encode them for the network.
"""
from snndist._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "make_dataset": "datasets", "SampleLoader": "loader", "to_events": "events",
    "Shard": "order", "plan_shards": "order", "batch_indices": "order", "data_position": "order",
})
