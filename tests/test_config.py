"""Config loading, overrides and validation; bad input exits 2 with one line."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snndist import config as config_module
from snndist.config import Config, ConfigError, config_hash, dump_yaml, from_dict, load_config

CONFIGS = sorted(p for p in Path("configs").glob("*.yaml") if not p.name.startswith("sweep_"))  # sweep files: test_sweep


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg, "the resolved config must round-trip"


def test_tutorial_has_the_seed_values():
    cfg = load_config("configs/tutorial.yaml")
    layer = cfg.model.layers[0]
    assert (cfg.data.num_inputs, layer.size, cfg.data.num_classes, cfg.data.timesteps) == (100, 4, 2, 200)
    assert (layer.tau_mem_ms, layer.tau_syn_ms, cfg.model.readout.tau_ms) == (20.0, 10.0, 10.0)
    assert (cfg.train.global_batch, cfg.train.optimizer, cfg.train.lr, cfg.data.rate_hz) == (256, "adam", 3e-3, 5.0)
    assert cfg.model.surrogate == "relu" and cfg.model.readout.reduce == "mean"


def test_overrides():
    cfg = load_config("configs/tutorial.yaml", [
        "train.steps=7", "train.lr=1e-4", "model.layers[0].size=8", "model.layers.0.recurrent=true",
        "model.layers[1]={size: 3}", "model.surrogate=arctan", "model.surrogate_params={alpha: 3}",
        "cluster.address=auto"])
    assert cfg.train.steps == 7 and cfg.train.lr == 1e-4
    assert cfg.model.layers[0].size == 8 and cfg.model.layers[0].recurrent
    assert cfg.model.layers[1].size == 3 and cfg.model.layers[0].tau_mem_ms == 20.0
    assert cfg.model.surrogate_params == {"alpha": 3.0} and cfg.cluster.address == "auto"


def test_every_choice_has_an_implementation():
    """Each value a Literal field allows is one the code dispatches on, and no other."""
    import typing

    from snndist.data.datasets import DATASETS
    from snndist.model.network import INIT_DISTRIBUTIONS, REDUCTIONS
    from snndist.model.precision import MATMUL_DTYPES
    from snndist.train.optim import OPTIMIZERS, SCHEDULES

    for literal, table in ((config_module.Optimizer, OPTIMIZERS), (config_module.LrSchedule, SCHEDULES),
                           (config_module.ReadoutReduce, REDUCTIONS), (config_module.WeightInit, INIT_DISTRIBUTIONS),
                           (config_module.DataKind, DATASETS), (config_module.Precision, MATMUL_DTYPES)):
        assert set(typing.get_args(literal)) == set(table), literal


def test_choices_are_checked_on_load():
    with pytest.raises(ConfigError, match=r"train.grad_sync='nccl': must be one of coordinator, xla"):
        load_config(None, ["train.grad_sync=nccl"])
    with pytest.raises(ConfigError, match=r"logging.wandb.mode='live': must be one of online, offline, disabled"):
        load_config(None, ["logging.wandb.mode=live"])
    assert load_config(None, ["logging.wandb.mode=null"]).logging.wandb.mode is None


def test_resumable_fields_and_the_checkpointed_hash():
    names = config_module.resumable_fields()
    assert {"train.steps", "train.workers", "train.min_workers", "data.encoding", "cluster.*", "logging.*",
            "checkpoint.*"} <= set(names)
    assert not any(n.startswith("model.") or n in ("train.lr", "train.seed", "data.num_samples") for n in names)
    tutorial = load_config("configs/tutorial.yaml")
    # Checkpoints store this hash: it must not change when the code around it does.
    assert config_hash(tutorial) == "a2f3359e93ada425"
    assert config_hash(load_config("configs/tutorial.yaml", ["train.steps=5", "data.encoding=dense",
                                                             "logging.log_every=7", "cluster.address=auto",
                                                             "train.workers=3", "train.min_workers=2"])) \
        == config_hash(tutorial)
    for math in ("train.lr=0.1", "model.layers[0].size=5", "data.seed=3", "train.global_batch=8"):
        assert config_hash(load_config("configs/tutorial.yaml", [math])) != config_hash(tutorial), math


def test_loading_a_config_imports_no_jax():
    code = ("import sys; from snndist.config import load_config; load_config('configs/tutorial.yaml'); "
            "import snndist.dist.coordinator; "
            "print(sorted(m for m in ('jax', 'jaxlib', 'optax', 'orbax') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_defaults_build_without_a_file():
    assert load_config(None) == Config()


BAD = [
    (["train.bogus=1"], "train.bogus: unknown key"),
    (["train.steps=many"], "train.steps='many': must be an integer"),
    (["train.lr=fast"], "train.lr='fast': must be a number"),
    (["model.layers[0].recurrent=3"], "model.layers[0].recurrent=3: must be true or false"),
    (["model.layers[0].tau_mem_ms=-1"], "model.layers[0].tau_mem_ms=-1.0: must be > 0"),
    (["model.layers[0].tau_syn_ms=0"], "model.layers[0].tau_syn_ms=0.0: must be > 0"),
    (["data.dt_ms=20"], "model.layers[0].tau_mem_ms=20.0: must be > data.dt_ms=20"),
    (["data.dt_ms=10"], "model.layers[0].tau_syn_ms=10.0: must be > data.dt_ms=10"),
    (["data.timesteps=0"], "data.timesteps=0: must be > 0"),
    (["model.layers[0].size=0"], "model.layers[0].size=0: must be > 0"),
    (["data.num_inputs=0"], "data.num_inputs=0: must be > 0"),
    (["model.surrogate=tanh"], "model.surrogate='tanh': must be one of relu, sigmoid"),
    (["model.surrogate_params={sigma: 1}"], "model.surrogate_params.sigma=1.0: not a parameter of surrogate 'relu'"),
    (["train.optimizer=lion"], "train.optimizer='lion': must be one of adam, adamw, sgd"),
    (["train.workers=2", "train.min_workers=3"], "train.min_workers=3: must be in [1, train.workers=2]"),
    (["model.layers=[]"], "model.layers=[]: must list at least one hidden layer"),
    (["train.steps"], "--set 'train.steps': expected KEY=VALUE"),
    (["=3"], "--set '=3': expected KEY=VALUE"),
    (["train..steps=3"], "malformed key"),
    (["model.layers[5].size=3"], "index 5 is out of range"),
    (["cluster.env={WANDB_API_KEY: secret-key}"],
     "cluster.env.WANDB_API_KEY='...': the W&B key is never sent to workers"),
    (["cluster.env={JAX_PLATFORMS: cuda}"], "cluster.env.JAX_PLATFORMS='cuda': set by cluster.accelerator"),
    (["train.unroll=0"], "train.unroll=0: must be >= 1"),
    (["train.steps_per_call=-1"], "train.steps_per_call=-1: must be >= 0 (0: about 1 s of work)"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/tutorial.yaml", overrides)
    assert message in str(err.value)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "snndist", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _assert_one_line_exit_2(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("overrides,message", [BAD[0], BAD[1], BAD[4], BAD[6], BAD[8], BAD[9],
                                               BAD[11], BAD[13], BAD[15]])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, overrides, message):
    args = ["train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", str(tmp_path / "r")]
    for item in overrides:
        args += ["--set", item]
    _assert_one_line_exit_2(_cli(*args), message)
    assert not (tmp_path / "r").exists(), "a bad config must not create a run directory"


def test_cli_missing_config_file(tmp_path):
    _assert_one_line_exit_2(_cli("train", "--config", str(tmp_path / "nope.yaml"), "--local"),
                            "nope.yaml: config file not found")


def test_cli_bad_yaml_and_bad_top_level(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    _assert_one_line_exit_2(_cli("train", "--config", str(broken), "--local"), "broken.yaml: not valid YAML")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    _assert_one_line_exit_2(_cli("train", "--config", str(listed), "--local"), "must hold a mapping")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modle: {}\n")
    _assert_one_line_exit_2(_cli("train", "--config", str(unknown), "--local"), "modle: unknown key")


def test_cli_unknown_option_exits_2():
    _assert_one_line_exit_2(_cli("train", "--config", "configs/tutorial.yaml", "--bogus"), "--bogus")


def test_help_lists_and_describes_every_command():
    top = _cli("--help")
    assert top.returncode == 0 and top.stdout.startswith("usage: snndist")
    commands = {"train": "--resume", "eval": "--split", "plot": "RUN_DIR", "submit": "--working-dir",
                "jobs": "--address", "status": "JOB", "logs": "--follow", "stop": "JOB", "bench": "--json"}
    for command, option in commands.items():
        assert f"    {command} " in top.stdout, f"{command} is missing from snndist --help"
        result = _cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: snndist {command}") and option in result.stdout, command


def test_the_command_keeps_its_exit_code_and_message_and_exits_with_its_heap_frozen(tmp_path):
    # The interpreter's last collections then skip what the command loaded (0.6 s of a train's exit).
    script = ("import gc, sys; from snndist.__main__ import main; "
              "sys.argv = ['snndist', 'train', '--config', sys.argv[1], '--local']; "
              "code = main(); print(gc.get_freeze_count() > 1000); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "nope.yaml")], capture_output=True,
                          text=True, timeout=120)
    _assert_one_line_exit_2(done, "nope.yaml: config file not found")
    assert done.stdout.strip() == "True"
