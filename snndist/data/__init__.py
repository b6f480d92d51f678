"""Datasets (index-addressable samples), the sample order, shards and encodings.

``datasets.make_dataset`` builds one; ``order`` plans which samples each step
and each worker reads; ``events`` and ``loader`` encode them for the network.
"""
