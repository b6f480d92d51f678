"""Figure builders: each returns a Figure that saves as a real, non-blank PNG."""
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from snndist import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def _check_png(fig, path, size):
    assert isinstance(fig, Figure)
    figures.save_png(fig, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.shape[:2] == size  # (height, width) in pixels
    assert pixels[..., :3].std() > 0  # something is drawn


@pytest.mark.parametrize("name, build, size", [
    ("raster", lambda: figures.spike_raster(RNG.random((100, 30)) < 0.05, "hidden0", dt_ms=0.5), (300, 600)),
    ("raster_empty", lambda: figures.spike_raster(np.zeros((50, 4), bool)), (300, 600)),
    ("voltage", lambda: figures.voltage_traces(RNG.normal(size=(80, 6)).cumsum(0), RNG.random((80, 6)) < 0.1,
                                               threshold=1.0, dt_ms=1.0), (450, 600)),
    ("voltage_no_spikes", lambda: figures.voltage_traces(RNG.normal(size=(80, 2)), None, 0.5), (300, 600)),
    ("loss_only", lambda: figures.loss_curve([{"step": s, "train/loss": 1.0 / s} for s in range(1, 40)]),
     (300, 600)),
    ("loss_acc", lambda: figures.loss_curve(
        [{"step": s, "train/loss": 2.0 / s, "train/accuracy": 1 - 1.0 / s} for s in range(1, 40)]
        + [{"step": 40, "eval/loss": 0.1, "eval/accuracy": 0.9}, {"step": 41, "train/loss": None}]), (300, 800)),
])
def test_builders_save_non_blank_png(tmp_path, name, build, size):
    _check_png(build(), tmp_path / f"{name}.png", size)


def test_network_pixels_from_a_forward_pass():
    import jax

    from snndist.config import from_dict
    from snndist.network import forward, init_params, network_spec
    from snndist.pixels import network_pixels

    cfg = from_dict({"model": {"layers": [{"size": 16, "init_scale": 40.0}, {"size": 8, "threshold": 0.5}]},
                     "data": {"timesteps": 50, "num_inputs": 20}})
    x = np.random.default_rng(1).random((3, 50, 20)) < 0.2
    trace = jax.tree.map(np.asarray, forward(init_params(jax.random.PRNGKey(0), cfg), x, network_spec(cfg)))
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
    # The input raster shows the chosen sample: one black pixel band per input spike.
    raster = images["images/input_raster"][0]
    assert (raster.min(axis=2) == 0).any(axis=1).reshape(20, -1).any(axis=1).sum() == x[1].any(axis=0).sum()
    assert images["images/voltage/hidden0"][0].shape[0] == 6 * 48, "at most 6 neurons, one strip each"


def test_rates():
    from snndist.pixels import firing_rates_hz

    spikes = np.zeros((10, 2, 3), bool)
    spikes[:, :, 0] = True  # every step: 1000 Hz at dt 1 ms
    spikes[::2, 0, 1] = True  # every other step in one sample of two: 250 Hz over the batch
    np.testing.assert_allclose(firing_rates_hz(spikes, dt_ms=1.0), [1000.0, 250.0, 0.0])


def test_to_rgb_and_close():
    fig = figures.spike_raster(np.eye(5, dtype=bool))
    rgb = figures.to_rgb(fig)
    assert rgb.shape == (300, 600, 3) and rgb.dtype == np.uint8 and rgb.std() > 0
    figures.close(fig)
    assert not fig.axes
