"""Samples are addressable by index; the order and the event encoding lose nothing."""
import dataclasses

import numpy as np
import pytest

from snndist.config import load_config
from snndist.data.datasets import make_dataset
from snndist.data.order import batch_indices, data_position, plan_shards
from snndist.data import synthetic
from snndist.data.events import bernoulli_capacity, to_events
from snndist.model.inputs import SpikeEvents
from snndist.data.loader import SampleLoader, events_pay
from snndist.errors import DataError
from snndist.train.spec import network_spec



def _first_layer(cfg):
    return network_spec(cfg).layers[0]


def _dataset(*overrides, split="train"):
    cfg = load_config("configs/tutorial.yaml", ["data.num_samples=40", *overrides])
    return cfg, make_dataset(cfg.data, split, cfg.train.seed)


def test_a_sample_is_a_function_of_its_index():
    _, ds = _dataset()
    x_all, y_all, dropped = ds.load(np.arange(40))
    x_some, y_some, _ = ds.load(np.array([17, 3, 17]))
    assert not dropped.any()
    np.testing.assert_array_equal(x_some, x_all[[17, 3, 17]])
    np.testing.assert_array_equal(y_some, y_all[[17, 3, 17]])
    assert x_all.shape == (40, 200, 100) and x_all.dtype == bool
    assert 0.003 < x_all.mean() < 0.007, "5 Hz at 1 ms is 0.5% of inputs active"
    assert set(np.unique(y_all)) == {0, 1}


def test_seeds_and_splits_differ():
    _, a = _dataset("data.seed=1")
    _, b = _dataset("data.seed=2")
    _, test = _dataset("data.seed=1", split="test")
    idx = np.arange(5)
    assert not np.array_equal(a.load(idx)[0], b.load(idx)[0])
    assert not np.array_equal(a.load(idx)[0], test.load(idx)[0])
    with pytest.raises(IndexError):
        a.load(np.array([40]))
    valid = _dataset("data.seed=1", split="valid")[1]
    assert not np.array_equal(a.load(idx)[0], valid.load(idx)[0]), "synthetic data has a valid split of its own"


def test_batch_order_covers_each_epoch_once():
    steps = [batch_indices(s, 16, 40, seed=0) for s in range(5)]  # 80 samples = 2 epochs
    stream = np.concatenate(steps)
    assert sorted(stream[:40]) == list(range(40)) and sorted(stream[40:]) == list(range(40))
    assert not np.array_equal(stream[:40], stream[40:]), "a new order each epoch"
    np.testing.assert_array_equal(batch_indices(3, 16, 40, seed=0), steps[3])
    np.testing.assert_array_equal(batch_indices(1, 16, 40, seed=0, shuffle=False), np.arange(16, 32))
    assert data_position(3, 16, 40) == {"epoch": 1, "offset": 8}


def test_plan_shards_pads_to_whole_devices():
    idx = np.arange(100, 110)
    shards = plan_shards(idx, 2, 2)  # 10 samples over 4 devices: 3 rows each, 2 of them padding
    assert [len(s.indices) for s in shards] == [6, 6]
    np.testing.assert_array_equal(np.concatenate([s.indices for s in shards])[:10], idx)
    weights = np.concatenate([s.weights for s in shards])
    assert weights.sum() == 10 and (weights[10:] == 0).all()
    assert [s.weights.sum() for s in plan_shards(np.arange(257), 2, 1)] == [129, 128]
    assert sum(len(s.indices) for s in plan_shards(idx, 1, 4, min_rows=16)) == 16


def _to_dense(ev: SpikeEvents, timesteps, n):
    dense = np.zeros((ev.times.shape[0], timesteps + 1, n), bool)  # row T collects padding
    b = np.repeat(np.arange(ev.times.shape[0]), ev.times.shape[1])
    dense[b, ev.times.ravel(), ev.units.ravel()] = True
    return dense[:, :timesteps]


def test_events_round_trip_and_overflow_is_an_error():
    _, ds = _dataset()
    x, _, _ = ds.load(np.arange(40))
    ev = to_events(x, ds.max_events)
    np.testing.assert_array_equal(_to_dense(ev, 200, 100), x)
    assert (ev.times == 200).any(), "padding slots are marked with t = T"
    with pytest.raises(DataError, match="more than the event capacity 10"):
        to_events(x, 10)


def test_synthetic_capacity_is_its_largest_sample_and_a_bound_past_the_counting_limit(monkeypatch):
    _, ds = _dataset()
    counts = ds.load(np.arange(40))[0].sum(axis=(1, 2))
    assert ds.max_events == 8 * -(-counts.max() // 8) < bernoulli_capacity(200, 100, 0.005)
    monkeypatch.setattr(synthetic, "COUNT_EVENTS_UP_TO", 40 * 200 * 100 - 1)
    assert _dataset()[1].max_events == bernoulli_capacity(200, 100, 0.005)


def test_loader_caches_and_encodes():
    cfg, ds = _dataset()
    loader = SampleLoader(ds, cfg.data, _first_layer(cfg))
    assert loader.encoding == "events"
    x1, y1, _ = loader.load(np.array([5, 9]))
    x2, y2, _ = loader.load(np.array([9, 5, 30]))
    np.testing.assert_array_equal(x1.times[0], x2.times[1])
    np.testing.assert_array_equal(y1, y2[[1, 0]])
    raw, _, _ = ds.load(np.array([30]))
    np.testing.assert_array_equal(_to_dense(SpikeEvents(x2.times[2:], x2.units[2:]), 200, 100), raw)
    dense = SampleLoader(ds, dataclasses.replace(cfg.data, encoding="dense"), _first_layer(cfg))
    np.testing.assert_array_equal(dense.load(np.array([30]))[0], raw)
    uncached = SampleLoader(ds, cfg.data, _first_layer(cfg), cache_bytes=0)
    np.testing.assert_array_equal(uncached.load(np.array([9]))[0].units, x1.units[1:])


# (first layer's neurons, density, events / dense ms) measured by scripts/bench_input_paths.py with f32
# products (BENCHMARKS.md), away from the crossover: auto must pick the faster path at each.
MEASURED = [(4, 0.05, 0.24), (4, 0.1, 0.56), (64, 0.02, 0.82), (64, 0.05, 1.27), (32, 0.02, 0.51),
            (32, 0.05, 1.06), (256, 0.01, 0.72), (256, 0.05, 1.55)]


@pytest.mark.parametrize("neurons, density, ratio", MEASURED)
def test_auto_picks_the_input_path_that_was_faster(neurons, density, ratio):
    assert events_pay(density, neurons, int8_products=False) == (ratio < 1)


def test_int8_products_move_the_crossover_down():
    """Int8 products of a bool raster with AMX tiles: dense was even with events at 0.3-0.7% on the SHD
    network and 14% faster at 1%; events stayed 3-8x faster on the tutorial's up to 2%."""
    assert events_pay(0.002, 256, True) and not events_pay(0.01, 256, True)
    assert events_pay(0.02, 4, True)


def test_prefetch_reads_each_sample_once():
    cfg, ds = _dataset()

    class Counting:
        """The dataset, recording which samples it was asked to read."""

        def __init__(self):
            self.asked = []

        def __getattr__(self, name):
            return getattr(ds, name)

        def __len__(self):
            return len(ds)

        def load(self, indices):
            self.asked.append(sorted(np.asarray(indices).tolist()))
            return ds.load(indices)

    counting = Counting()
    loader = SampleLoader(counting, cfg.data, _first_layer(cfg))
    loader.prefetch(np.array([4, 2, 4]))
    x, y, _ = loader.load(np.array([2, 7, 4]))
    assert counting.asked == [[2, 4], [7]], "prefetched samples come from the cache"
    np.testing.assert_array_equal(y, ds.load(np.array([2, 7, 4]))[1])
