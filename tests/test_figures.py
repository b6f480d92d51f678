"""Pictures of a network: the matplotlib figures of ``snndist plot`` and the pixel pictures W&B gets.

Each check reads back what was drawn (plotted coordinates, pixel rows), so a
figure that drew nothing, or the wrong data, fails.
"""
import jax
import numpy as np
import pytest
from matplotlib.image import imread

from snndist.config import from_dict
from snndist.model.network import forward, init_params
from snndist.track import figures
from snndist.track.pixels import firing_rates_hz, network_pixels
from snndist.train.spec import network_spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def _png(fig, path):
    figures.save_png(fig, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path)[..., :3]


def test_spike_raster_plots_each_spike_at_its_time_and_neuron(tmp_path):
    spikes = RNG.random((100, 30)) < 0.05
    fig = figures.spike_raster(spikes, "hidden0", dt_ms=0.5)
    ax = fig.axes[0]
    t, neuron = np.nonzero(spikes)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.stack([t * 0.5, neuron], axis=1))
    assert ax.get_xlabel() == "time (ms)" and f"{t.size} spikes, 30 neurons" in ax.get_title()
    drawn = _png(fig, tmp_path / "raster.png")
    empty = _png(figures.spike_raster(np.zeros((100, 30), bool), "hidden0", dt_ms=0.5), tmp_path / "empty.png")
    assert drawn.shape == empty.shape == (300, 600, 3)
    assert (drawn < 0.5).sum() > (empty < 0.5).sum() + 5 * t.size, "every spike adds dark pixels"


def test_voltage_traces_plot_each_neuron_threshold_and_spikes(tmp_path):
    v = RNG.normal(size=(80, 3)).cumsum(0)
    s = RNG.random((80, 3)) < 0.1
    fig = figures.voltage_traces(v, s, threshold=1.5, dt_ms=2.0)
    assert len(fig.axes) == 3
    for i, ax in enumerate(fig.axes):
        trace, threshold, ticks = ax.lines[0], ax.lines[1], ax.lines[2] if s[:, i].any() else None
        np.testing.assert_allclose(trace.get_xdata(), np.arange(80) * 2.0)
        np.testing.assert_allclose(trace.get_ydata(), v[:, i])
        assert list(threshold.get_ydata()) == [1.5, 1.5]
        if ticks is not None:
            np.testing.assert_allclose(ticks.get_xdata(), np.nonzero(s[:, i])[0] * 2.0)
    assert _png(fig, tmp_path / "v.png").shape == (300, 600, 3)
    with pytest.raises(ValueError, match="spikes shape"):
        figures.voltage_traces(v, s[:, :2])


def test_loss_curve_plots_what_metrics_jsonl_holds(tmp_path):
    rows = ([{"step": s, "train/loss": 2.0 / s, "train/accuracy": 1 - 1.0 / s} for s in range(1, 40)]
            + [{"step": 40, "eval/loss": 0.1, "eval/accuracy": 0.9}, {"step": 41, "train/loss": None}])
    fig = figures.loss_curve(rows)
    loss_ax, acc_ax = fig.axes
    train = next(l for l in loss_ax.lines if l.get_label() == "train/loss")
    np.testing.assert_allclose(train.get_xdata(), np.arange(1, 40))
    np.testing.assert_allclose(train.get_ydata(), 2.0 / np.arange(1, 40))
    assert loss_ax.get_yscale() == "log", "every loss is positive"
    assert [l.get_label() for l in acc_ax.lines] == ["train/accuracy", "eval/accuracy"]
    assert _png(fig, tmp_path / "loss.png").shape == (300, 800, 3)
    only_loss = figures.loss_curve([{"step": 1, "train/loss": -1.0}, {"step": 2, "train/loss": 1.0}])
    assert len(only_loss.axes) == 1 and only_loss.axes[0].get_yscale() == "linear"


def test_network_pixels_from_a_forward_pass():
    cfg = from_dict({"model": {"layers": [{"size": 16, "init_scale": 40.0}, {"size": 8, "threshold": 0.5}]},
                     "data": {"timesteps": 50, "num_inputs": 20}})
    spec = network_spec(cfg)
    x = np.random.default_rng(1).random((3, 50, 20)) < 0.2
    trace = jax.tree.map(np.asarray, forward(init_params(jax.random.PRNGKey(0), spec), x, spec))
    assert trace.spikes[0].sum() > 0, "the pictures need spikes to show"
    images = network_pixels(trace, x, sample=1, dt_ms=cfg.data.dt_ms,
                            thresholds=[l.threshold for l in cfg.model.layers], label=0)
    assert sorted(images) == sorted([
        "images/input_raster", "images/readout",
        "images/hidden_raster/hidden0", "images/hidden_raster/hidden1",
        "images/voltage/hidden0", "images/voltage/hidden1",
        "images/rate_hist/hidden0", "images/rate_hist/hidden1"])
    for key, (pixels, caption) in images.items():
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, key
        assert pixels.std() > 0 and caption, key
    # The rasters show the chosen sample: a row band holds black pixels exactly where a unit spiked.
    raster = images["images/input_raster"][0]
    assert (raster.min(axis=2) == 0).any(axis=1).reshape(20, -1).any(axis=1).tolist() == x[1].any(axis=0).tolist()
    hidden = images["images/hidden_raster/hidden0"][0]
    bands = (hidden.min(axis=2) == 0).reshape(16, -1, hidden.shape[1]).any(axis=1)  # [neuron, column]
    assert bands.any(axis=1).tolist() == trace.spikes[0][:, 1].any(axis=0).tolist()
    assert bands.sum() == trace.spikes[0][:, 1].sum(), "one column per step at T=50 (4 px wide): one tick each"
    assert images["images/voltage/hidden0"][0].shape[0] == 6 * 48, "at most 6 neurons, one strip each"


def test_rates():
    spikes = np.zeros((10, 2, 3), bool)
    spikes[:, :, 0] = True  # every step: 1000 Hz at dt 1 ms
    spikes[::2, 0, 1] = True  # every other step in one sample of two: 250 Hz over the batch
    np.testing.assert_allclose(firing_rates_hz(spikes, dt_ms=1.0), [1000.0, 250.0, 0.0])
