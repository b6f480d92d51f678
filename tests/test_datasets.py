"""Real dataset formats: files written here in each published layout, binned tensors checked
against hand-computed ones; bad files give one line and exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml
from dataset_files import nmnist_bytes, write_event_file, write_nmnist, write_shd
from wandb_records import inspect_summary

from snndist.config import load_config
from snndist.data.datasets import make_dataset
from snndist.data.loader import SampleLoader
from snndist.data.nmnist import read_recording
from snndist.data.order import batch_indices, plan_shards
from snndist.errors import DataError
from snndist.train.spec import network_spec

REPO = Path(__file__).resolve().parent.parent
NMNIST_SAMPLE = Path(__file__).parent / "data" / "nmnist_sample.bin"
CLI = [sys.executable, "-m", "snndist"]

# Three SHD samples: events inside the 10 ms window and past it; no events at all; three events of
# one unit in one bin. Times are chosen away from bin edges at float16, the published precision.
SHD_TIMES = [[0.0005, 0.0015, 0.0019, 0.0123, 0.5], [], [0.0021, 0.0022, 0.0027]]
SHD_UNITS = [[3, 3, 699, 10, 5], [], [7, 7, 7]]
SHD_LABELS = [1, 0, 19]
SHD_FIRST_LAYER = network_spec(load_config("configs/bench_shd.yaml")).layers[0]  # picks the input encoding


def _data(**fields):
    base = {"num_inputs": 700, "num_classes": 20, "timesteps": 10, "dt_ms": 1.0}
    return load_config(None, [f"data.{k}={v}" for k, v in {**base, **fields}.items()]).data


def _frames(shape, *cells, value=True):
    x = np.zeros(shape, np.uint8 if value is not True else bool)
    for cell in cells:
        x[cell] = value
    return x


@pytest.mark.parametrize("gz", [False, True], ids=["h5", "h5.gz"])
def test_shd_bins_events_exactly(tmp_path, gz, monkeypatch):
    monkeypatch.setenv("SNNDIST_LOCAL_DIR", str(tmp_path / "local"))
    write_shd(tmp_path / "shd" / "shd_train.h5", SHD_TIMES, SHD_UNITS, SHD_LABELS, gz=gz)
    data = make_dataset(_data(kind="shd", path=tmp_path / "shd"), "train")
    x, y, dropped = data.load(np.arange(3))
    expected = np.zeros((3, 10, 700), bool)
    expected[0, 0, 3] = expected[0, 1, 3] = expected[0, 1, 699] = True  # 12.3 ms and 500 ms: past the window
    expected[2, 2, 7] = True
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, SHD_LABELS)
    np.testing.assert_array_equal(dropped, [2, 0, 0])
    if gz:
        assert list((tmp_path / "local" / "data").glob("shd_train.h5-*")), "unpacked once, into the local dir"

    counted = make_dataset(_data(kind="shd", path=tmp_path / "shd", bin_count="count"), "train")
    x, _, _ = counted.load(np.array([2, 0]))
    assert x.dtype == np.uint8 and x[0, 2, 7] == 3 and x[1, 1, 699] == 1 and x.sum() == 3 + 3

    pooled = make_dataset(_data(kind="shd", path=tmp_path / "shd", channel_pool=2, num_inputs=350), "train")
    x, _, _ = pooled.load(np.array([0]))
    np.testing.assert_array_equal(np.argwhere(x[0]), [[0, 1], [1, 1], [1, 349]])


def test_ssc_has_a_valid_split_and_others_hold_one_out(tmp_path):
    for split, labels in (("train", [0, 1, 2, 3]), ("valid", [34]), ("test", [5, 6])):
        write_shd(tmp_path / f"ssc_{split}.h5", [[0.001]] * len(labels), [[1]] * len(labels), labels)
    cfg = _data(kind="ssc", path=tmp_path, num_classes=35)
    assert [len(make_dataset(cfg, s)) for s in ("train", "valid", "test")] == [4, 1, 2]
    assert make_dataset(cfg, "valid").load(np.array([0]))[1].tolist() == [34]

    synthetic = load_config(None, ["data.num_samples=40", "data.valid_fraction=0.25"]).data
    train, valid = make_dataset(synthetic, "train"), make_dataset(synthetic, "valid")
    assert (len(train), len(valid)) == (30, 10)
    assert sorted(np.concatenate([train.rows, valid.rows]).tolist()) == list(range(40)), "a partition of train"
    np.testing.assert_array_equal(valid.rows, make_dataset(load_config(
        None, ["data.num_samples=40", "data.valid_fraction=0.25", "train.seed=5"]).data, "valid", 5).rows)
    with pytest.raises(DataError, match="data.kind=shd has the splits train, test, not 'valid'"):
        make_dataset(_data(kind="shd", path=tmp_path), "valid")


def test_nmnist_reads_the_published_format(tmp_path):
    events = [(0, 0, 1, 100), (33, 33, 0, 1500), (5, 6, 1, 2999),
              (0, 240, 0, 0),  # overflow: every later timestamp + 2^13 us
              (1, 2, 0, 500)]
    write_nmnist(tmp_path, "train", {(7, 1): nmnist_bytes(events)})
    x, y, p, t = read_recording(tmp_path / "Train" / "7" / "00001.bin")
    np.testing.assert_array_equal(np.stack([x, y, p, t]),
                                  [[0, 33, 5, 1], [0, 33, 6, 2], [1, 0, 1, 0], [100, 1500, 2999, 8692]])
    data = make_dataset(_data(kind="nmnist", path=tmp_path, num_inputs=2 * 34 * 34, num_classes=10), "train")
    frames, labels, dropped = data.load(np.array([0]))
    channel = lambda x, y, p: (p * 34 + y) * 34 + x
    expected = _frames((1, 10, 2312), (0, 0, channel(0, 0, 1)), (0, 1, channel(33, 33, 0)),
                       (0, 2, channel(5, 6, 1)), (0, 8, channel(1, 2, 0)))
    np.testing.assert_array_equal(frames, expected)
    assert labels.tolist() == [7] and dropped.tolist() == [0]


def test_the_real_nmnist_sample(tmp_path):
    x, y, p, t = read_recording(NMNIST_SAMPLE)
    assert len(x) == 4325 and (x.min(), x.max(), y.min(), y.max()) == (0, 33, 0, 33)
    assert p.sum() == 2145 and (t.min(), t.max()) == (654, 311175) and np.all(np.diff(t) >= 0)
    write_nmnist(tmp_path, "test", {(5, 1): NMNIST_SAMPLE.read_bytes()})
    whole = _data(kind="nmnist", path=tmp_path, num_inputs=2 * 17 * 17, num_classes=10, channel_pool=2,
                  timesteps=320, bin_count="count")
    frames, labels, dropped = make_dataset(whole, "test").load(np.array([0]))
    assert frames.sum() == 4325 and dropped.tolist() == [0] and labels.tolist() == [5], "all in 320 ms"
    on = frames[0].sum(axis=0).reshape(2, 17, 17)
    assert on[1].sum() == 2145 and on[1, y[p == 1][0] // 2, x[p == 1][0] // 2] > 0
    short = _data(kind="nmnist", path=tmp_path, num_inputs=2 * 17 * 17, num_classes=10, channel_pool=2,
                  timesteps=100, bin_count="count")
    frames, _, dropped = make_dataset(short, "test").load(np.array([0]))
    assert dropped[0] == (t >= 100_000).sum() and frames.sum() + dropped[0] == 4325


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_users_event_files(tmp_path, suffix):
    samples = [([0.0001, 0.0041, 0.02], [0, 2, 1]), ([], []), ([0.0005], [1])]
    write_event_file(tmp_path / f"train{suffix}", samples, [1, 0, 2], polarity=[[1, 0, 0], [], [1]])
    data = make_dataset(load_config(None, ["data.kind=events", f"data.path={tmp_path}", "data.num_inputs=6",
                                           "data.num_classes=3", "data.timesteps=10"]).data, "train")
    x, y, dropped = data.load(np.arange(3))
    # input index 2 * channel + polarity
    np.testing.assert_array_equal(x, _frames((3, 10, 6), (0, 0, 1), (0, 4, 4), (2, 0, 3)))
    assert y.tolist() == [1, 0, 2] and dropped.tolist() == [1, 0, 0]


def test_static_data_encodings(tmp_path):
    x = np.array([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.25, 0.0, 0.0], [0.5, 0.5, 0.5]])
    np.savez(tmp_path / "s.npz", x=x * 4, y=[0, 1, 0, 1], x_test=x[:2] * 4, y_test=[1, 1])  # scaled by train's range
    base = ["data.kind=encoded", f"data.path={tmp_path / 's.npz'}", "data.num_inputs=3", "data.timesteps=5"]
    latency = make_dataset(load_config(None, [*base, "data.encode.method=latency"]).data, "train")
    spikes, labels, _ = latency.load(np.array([0, 2]))
    # linear latency: step (1 - x) * (T - 1); x = 0 never fires
    np.testing.assert_array_equal(spikes, _frames((2, 5, 3), (0, 2, 1), (0, 0, 2), (1, 3, 0)))
    logarithmic = make_dataset(load_config(None, [*base, "data.encode.method=latency", "data.encode.latency=log",
                                                  "data.encode.threshold=0.0625"]).data, "test")
    spikes, _, _ = logarithmic.load(np.array([0]))
    np.testing.assert_array_equal(spikes, _frames((1, 5, 3), (0, 1, 1), (0, 0, 2)))  # 4 ln 2 / ln 16 = 1

    rate = load_config(None, [*base, "data.timesteps=2000", "data.encode.max_rate_hz=400"]).data
    once, again = make_dataset(rate, "train"), make_dataset(rate, "train")
    a = once.load(np.array([3, 1]))[0]
    np.testing.assert_array_equal(a, again.load(np.array([3, 1]))[0])  # a pure function of the sample
    np.testing.assert_array_equal(a[1], once.load(np.array([1]))[0][0])
    np.testing.assert_allclose(a[1].mean(axis=0), [0.4, 0.4, 0.4], atol=0.03)  # p = x * 400 Hz * 1 ms
    np.testing.assert_allclose(a[0].mean(axis=0), [0.2, 0.2, 0.2], atol=0.03)
    assert not np.array_equal(a, make_dataset(rate, "train", default_seed=1).load(np.array([3, 1]))[0])

    digits = load_config("configs/digits.yaml").data
    train, test = make_dataset(digits, "train"), make_dataset(digits, "test")
    assert (len(train), len(test)) == (1438, 359) and train.num_inputs == 64


def test_a_tonic_dataset(tmp_path):
    """tonic's POKERDVS, pointed at files written here in its layout (its archive need only exist)."""
    root = tmp_path / "POKERDVS"
    (root / "pips_train").mkdir(parents=True)
    (root / "pips_train.tar.gz").write_bytes(b"")
    rng = np.random.default_rng(0)
    for k, suit in enumerate(("cl", "he", "di", "sp")):
        (root / "pips_train" / f"{suit}").mkdir()
        for i in range(5):
            events = np.stack([np.sort(rng.integers(0, 9000, 6)), rng.integers(0, 35, 6), rng.integers(0, 35, 6),
                               rng.integers(0, 2, 6)], axis=1)  # t (us), x, y, p
            np.save(root / "pips_train" / suit / f"{i}.npy", events)
    cfg = load_config(None, ["data.kind=tonic", "data.tonic_dataset=POKERDVS", f"data.path={tmp_path}",
                             "data.num_inputs=2450", "data.num_classes=4", "data.timesteps=10"]).data
    data = make_dataset(cfg, "train")
    assert len(data) == 20
    import tonic

    events, label = tonic.datasets.POKERDVS(str(tmp_path), train=True)[7]
    frames, labels, _ = data.load(np.array([7]))
    expected = np.zeros((10, 2450), bool)
    expected[events["t"] // 1000, (events["p"] * 35 + events["y"]) * 35 + events["x"]] = True
    np.testing.assert_array_equal(frames[0], expected)
    assert labels[0] == label


def test_events_encoding_keeps_counts():
    from snndist.data.events import to_events

    spikes = np.zeros((1, 4, 3), np.uint8)
    spikes[0, 1, 2], spikes[0, 3, 0] = 2, 1
    ev = to_events(spikes, 5)
    assert sorted(zip(ev.times[0][:3].tolist(), ev.units[0][:3].tolist())) == [(1, 2), (1, 2), (3, 0)]
    assert (ev.times[0][3:] == 4).all()


def test_events_encoding_needs_a_bound_for_recordings(tmp_path):
    write_shd(tmp_path / "shd_train.h5", SHD_TIMES, SHD_UNITS, SHD_LABELS)
    cfg = _data(kind="shd", path=tmp_path)
    assert SampleLoader(make_dataset(cfg), cfg, SHD_FIRST_LAYER).encoding == "dense", "auto: no bound known, so dense"
    events = _data(kind="shd", path=tmp_path, encoding="events")
    with pytest.raises(DataError, match="data.encoding=events needs data.max_events"):
        SampleLoader(make_dataset(events), events, SHD_FIRST_LAYER)
    bounded = _data(kind="shd", path=tmp_path, encoding="events", max_events=8)
    x, _, _ = SampleLoader(make_dataset(bounded), bounded, SHD_FIRST_LAYER).load(np.array([0]))
    assert sorted(zip(x.times[0][:3].tolist(), x.units[0][:3].tolist())) == [(0, 3), (1, 3), (1, 699)]


def test_an_epoch_uses_every_sample_once_over_three_workers():
    n, batch, workers = 37, 10, 3  # 10 does not divide 37, nor 3 the 10
    rows = []
    for step in range(4):  # 40 stream positions: the epoch and 3 samples of the next
        for shard in plan_shards(batch_indices(step, batch, n, seed=0), workers, 1):
            rows += shard.indices[shard.weights > 0].tolist()
    assert sorted(rows[:n]) == list(range(n)) and len(rows) == 40


# --------------------------------------------------------------------- through the CLI
def _cli(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _shd_config(tmp_path, path, **data) -> Path:
    config = {"model": {"layers": [{"size": 8}]},
              "data": {"kind": "shd", "path": str(path), "num_inputs": 700, "num_classes": 20, "timesteps": 10,
                       **data},
              "train": {"steps": 6, "global_batch": 2, "eval_split": "test"},
              "logging": {"log_every": 2, "wandb": {"mode": "disabled"}}, "checkpoint": {"every_steps": 3}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "c.yaml"


def _bad(tmp_path, make, kind="shd"):
    """What each broken dataset gives, through `snndist train --local`."""
    data = tmp_path / "data"
    make(data)
    if kind == "shd":
        config = _shd_config(tmp_path, data)
    else:
        config = tmp_path / "c.yaml"
        extra = {"nmnist": {"num_inputs": 2312, "num_classes": 10},
                 "encoded": {"path": str(data / "x.npz"), "num_inputs": 3, "num_classes": 2}}[kind]
        config.write_text(yaml.safe_dump({"data": {"kind": kind, "path": str(data), "timesteps": 10, **extra},
                                          "train": {"steps": 2, "global_batch": 2},
                                          "logging": {"wandb": {"mode": "disabled"}}}))
    return _cli("train", "--config", str(config), "--local", "--run-dir", str(tmp_path / "run"))


def _good_shd(data, times=SHD_TIMES, units=SHD_UNITS, labels=SHD_LABELS, **kw):
    write_shd(data / "shd_train.h5", times, units, labels, **kw)
    write_shd(data / "shd_test.h5", times, units, labels)


BAD = {
    "missing directory": (lambda d: None, "shd", "data.path={d}: no such directory"),
    "missing file": (lambda d: write_shd(d / "shd_test.h5", [[0.001]], [[1]], [1]), "shd",
                     "{d}/shd_train.h5: no such file (nor shd_train.h5.gz)"),
    "missing key": (lambda d: _good_shd(d, drop="spikes/units"), "shd",
                    "{d}/shd_train.h5: no 'spikes/units' in the file (an SHD file holds spikes/times, "
                    "spikes/units, labels)"),
    "label out of range": (lambda d: _good_shd(d, labels=[1, 25, 3]), "shd",
                           "shd_train.h5: sample 1 has label 25, out of range [0, data.num_classes=20)"),
    "unit past the channels": (lambda d: _good_shd(d, units=[[3, 3, 700, 10, 5], [], [7, 7, 7]]), "shd",
                               "shd_train.h5 sample 0: channel 700 is out of range [0, 700)"),
    "negative time": (lambda d: _good_shd(d, times=[[0.0005], [], [-0.5, 0.001, 0.002]],
                                          units=[[1], [], [1, 2, 3]]), "shd",
                      "shd_train.h5 sample 2: negative event time -500"),
    "empty nmnist file": (lambda d: write_nmnist(d, "train", {(3, 1): nmnist_bytes([(1, 1, 0, 10)]),
                                                              (4, 2): b""}), "nmnist",
                          "{d}/Train/4/00002.bin: empty file (an N-MNIST recording has 5 bytes per event)"),
    "truncated nmnist file": (lambda d: write_nmnist(d, "train", {(3, 1): nmnist_bytes([(1, 1, 0, 10)] * 3)[:12]}),
                              "nmnist", "{d}/Train/3/00001.bin: 12 bytes, not a whole number of 5-byte events "
                                        "(truncated?)"),
    "npz without y": (lambda d: (d.mkdir(), np.savez(d / "x.npz", x=np.ones((4, 3))))[0], "encoded",
                      "{d}/x.npz: no 'y' array (data.kind=encoded reads x: [n, ...] features, y: [n] labels)"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_data_is_one_line_and_exit_2(tmp_path, case):
    make, kind, message = BAD[case]
    result = _bad(tmp_path, make, kind)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"snndist: error: {message.format(d=tmp_path / 'data')}"], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_data_in_a_ray_worker_is_the_same_line(tmp_path):
    make, kind, message = BAD["label out of range"]
    make(tmp_path / "data")
    run = tmp_path / "run"
    result = _cli("train", "--config", str(_shd_config(tmp_path, tmp_path / "data")), "--run-dir", str(run),
                  "--set", "logging.wandb.mode=offline")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [f"snndist: error: {message}"]
    # Found while W&B started: its run is closed, and the run directory holds no run, so the same command
    # can run again.
    [run_file] = run.glob("wandb/offline-run-*/run-*.wandb")
    assert inspect_summary(run_file)["state"] == "finished"
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()


def _params(run_dir):
    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(), item_names=("params", "meta"))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
    return step, restored["params"], restored["meta"]


def test_shd_layout_run_resumed_mid_epoch_ends_bitwise_where_an_uninterrupted_one_ends(tmp_path):
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 0.012, 40)) for _ in range(7)]  # some past the 10 ms window
    units = [rng.integers(0, 700, 40) for _ in range(7)]
    labels = rng.integers(0, 20, 7)
    write_shd(tmp_path / "data" / "shd_train.h5", times, units, labels)
    write_shd(tmp_path / "data" / "shd_test.h5", times[:3], units[:3], labels[:3])
    config = _shd_config(tmp_path, tmp_path / "data", timesteps=10)
    whole = _cli("train", "--config", str(config), "--local", "--run-dir", str(tmp_path / "whole"),
                 "--set", "train.global_batch=3")
    assert whole.returncode == 0, whole.stderr
    first = _cli("train", "--config", str(config), "--local", "--run-dir", str(tmp_path / "part"),
                 "--set", "train.global_batch=3", "--set", "train.steps=4")
    assert first.returncode == 0, first.stderr
    step, _, meta = _params(tmp_path / "part")
    assert step == 4 and meta["data_position"] == {"epoch": 1, "offset": 5}, "12 samples into 7: mid-epoch 2"
    resumed = _cli("train", "--resume", str(tmp_path / "part"), "--local", "--set", "train.steps=6")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "part")
    assert a[0] == b[0] == 6
    for layer in a[1]:
        for name in a[1][layer]:
            np.testing.assert_array_equal(a[1][layer][name], b[1][layer][name], err_msg=f"{layer}/{name}")
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("data/dropped_events", 0) > 0 for r in rows), "events past the window are counted"
    assert "events at or after 10 ms" in whole.stdout, "and said once"


def test_digits_trains_far_above_chance_on_the_embedded_ray(tmp_path):
    result = _cli("train", "--config", "configs/digits.yaml", "--run-dir", str(tmp_path / "run"),
                  "--set", "train.steps=300", "--set", "train.eval_every=0", "--set", "model.layers[0].size=64",
                  "--set", "logging.wandb.mode=disabled", timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval/accuracy"] > 0.8, summary  # chance: 0.1; the test split, 359 held-out images
    evaluated = _cli("eval", str(tmp_path / "run"), "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "run" / "eval_test.json").read_text())["eval/accuracy"] == pytest.approx(
        summary["eval/accuracy"])


def test_the_readme_script_writes_a_users_event_file(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    script = next(block.split("```", 1)[0] for block in text.split("```python\n")[1:] if "np.savez" in block)
    (tmp_path / "my_data").mkdir()
    monkeypatch.chdir(tmp_path)
    exec(compile(script, "README", "exec"), {})
    data = make_dataset(load_config(None, ["data.kind=events", "data.path=my_data", "data.num_inputs=32",
                                           "data.timesteps=20"]).data, "train")
    x, y, _ = data.load(np.arange(2))
    assert y.tolist() == [1, 0]
    np.testing.assert_array_equal(np.argwhere(x[0]), [[1, 3], [4, 17], [10, 3]])
    np.testing.assert_array_equal(np.argwhere(x[1]), [[2, 5]])
