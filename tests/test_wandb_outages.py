"""W&B is a side channel: its environment variables are honoured, and an outage, a bad key or a dead
W&B service never stops training (unless on_error says so). Real runs through the CLI, real W&B,
servers on loopback only."""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from raynodes import free_port
from wandb_records import history, inspect_records

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "snndist"]
KEY = "k" * 40  # well-formed, never valid anywhere
SHORT = ["train.steps=40", "logging.log_every=10", "logging.wandb.images_every=20", "checkpoint.every_steps=20"]


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "wandb-home"
    env.update(WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
               WANDB_DATA_DIR=str(home / "data"), **extra)
    return env


def _train(run: Path, env: dict, *overrides: str, popen: bool = False):
    args = [*CLI, "train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", str(run)]
    for item in (*SHORT, *overrides):
        args += ["--set", item]
    if popen:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    result.wall_s = time.monotonic() - began
    return result


class Listener:
    """A loopback TCP server that accepts and closes connections, counting them: it stands for a W&B
    server that is up but does not get past the key check, and shows whether anything called it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


class Refusing(http.server.BaseHTTPRequestHandler):
    """A W&B server on loopback that refuses every request as W&B's API does an unknown entity."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"errors": [{"message": "entity nobody-here not found"}]}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _warnings(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if "W&B" in line and line.startswith("warning:")]


def _offline_steps(run: Path) -> list[int]:
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return [step for step, _ in history(inspect_records(files[0]))]


def _logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "train/loss" in json.loads(line)]


def test_wandb_mode_offline_with_a_key_makes_no_network_attempt(tmp_path, listener):
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=KEY, WANDB_MODE="offline", WANDB_BASE_URL=listener.url))
    assert result.returncode == 0, result.stderr
    assert "(offline, sync later with `wandb sync`)" in result.stdout and not _warnings(result)
    assert listener.connections == 0, "offline means no connection to the W&B server"
    assert _offline_steps(run) == [10, 20, 30, 40]


def test_environment_settings_reach_the_run_and_the_config_wins(tmp_path):
    run = tmp_path / "run"
    env = _env(tmp_path, WANDB_PROJECT="from-env", WANDB_RUN_GROUP="group-env", WANDB_TAGS="a,b",
               WANDB_DIR=str(tmp_path / "wandb-dir"))
    result = _train(run, env, "logging.wandb.project=from-config")
    assert result.returncode == 0, result.stderr
    assert not (run / "wandb").exists(), "WANDB_DIR says where W&B's files go"
    files = list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    record = next(r["run"] for r in inspect_records(files[0]) if r["type"] == "run")
    assert record["project"] == "from-config" and record["run_group"] == "group-env" and record["tags"] == ["a", "b"]


def test_wandb_mode_disabled_writes_no_wandb_files(tmp_path):
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=KEY, WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stderr
    assert "W&B" not in result.stdout and not (run / "wandb").exists()
    assert _logged_steps(run) == [10, 20, 30, 40]


def test_unreachable_server_falls_back_to_offline_in_seconds(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    without = _train(tmp_path / "without", _env(tmp_path), "logging.wandb.mode=disabled")
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=KEY, WANDB_BASE_URL=closed))  # online: the key says so
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result)
    assert len(warnings) == 1 and f"cannot reach {closed}" in warnings[0], result.stdout
    assert "logging this run offline instead" in warnings[0] and "wandb sync" in warnings[0]
    assert result.stderr.strip() == ""
    assert _offline_steps(run) == [10, 20, 30, 40] and _logged_steps(run) == [10, 20, 30, 40]
    assert result.wall_s - without.wall_s < 10, (result.wall_s, without.wall_s)


def test_a_malformed_key_falls_back_and_is_written_nowhere(tmp_path, listener):
    secret = "not-a-key-" + "7" * 9  # 19 characters: W&B refuses it before any request
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=secret, WANDB_BASE_URL=listener.url))
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result)
    assert len(warnings) == 1 and "API key must have 40+ characters" in warnings[0], result.stdout
    assert _offline_steps(run) == [10, 20, 30, 40]
    assert secret not in result.stdout + result.stderr
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


def test_an_entity_the_server_refuses_is_one_line(tmp_path, refusing_server):
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=KEY, WANDB_BASE_URL=refusing_server),
                    "logging.wandb.entity=nobody-here")
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result)
    assert len(warnings) == 1 and "CommError: entity nobody-here not found" in warnings[0], result.stdout
    assert _offline_steps(run) == [10, 20, 30, 40] and result.stderr.strip() == ""


def test_on_error_fail_stops_with_one_line(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    run = tmp_path / "run"
    result = _train(run, _env(tmp_path, WANDB_API_KEY=KEY, WANDB_BASE_URL=closed), "logging.wandb.on_error=fail")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"snndist: error: W&B could not start online (cannot reach {closed}: Connection refused); "
        "logging.wandb.on_error=fail stops the run"]
    assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists(), "the same command can run again"

    disabled = _train(tmp_path / "run2", _env(tmp_path, WANDB_API_KEY=KEY, WANDB_BASE_URL=closed),
                      "logging.wandb.on_error=disable")
    assert disabled.returncode == 0 and "metrics.jsonl only" in _warnings(disabled)[0]
    assert not (tmp_path / "run2" / "wandb").exists()


def test_a_killed_wandb_service_does_not_stop_training(tmp_path):
    run = tmp_path / "run"
    proc = _train(run, _env(tmp_path), "train.steps=600", "logging.log_every=5", popen=True)
    killed = False
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if not killed and line.startswith("step 100/600"):
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            service = [int(pid) for pid in children
                       if "wandb-core" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
            assert len(service) == 1, children
            os.kill(service[0], signal.SIGKILL)
            killed = True
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    out = "".join(lines)
    warnings = [l for l in out.splitlines() if l.startswith("warning: W&B failed")]
    assert len(warnings) == 1 and "training goes on without it" in warnings[0], out
    assert _logged_steps(run) == list(range(5, 601, 5)), "metrics.jsonl keeps every row"
    assert "Traceback" not in err and "Exception ignored" not in err, err
