"""One owner per run directory: an exclusive lease, taken before a run writes anything, renewed by a
heartbeat, released on every way out.

The lease is ``RUN_DIR/.snndist-lease.json``: host, pid, start time, Ray job id if any, and the time
of the last heartbeat. On a local or shared filesystem the holder also keeps an OS lock (``flock``) on
``RUN_DIR/.snndist-lease.lock``, which the OS drops when the holder dies, even by SIGKILL; locks on NFS
are not to be trusted alone, so a fresh heartbeat of a holder on another host refuses too. On
``gs://`` the lease object is created only if absent and renewed or deleted only if its generation is
still ours: Cloud Storage's preconditions make each of those atomic. A lease whose heartbeat is older
than ``checkpoint.lease_timeout_s`` (its holder died without releasing it), or on this host whose
holder is gone, is taken over with a warning that names the old holder.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable

from etils import epath

from snndist.errors import RunDirInUse, RunFailed
from snndist.store.rundir import is_remote

LEASE = ".snndist-lease.json"
LOCK = ".snndist-lease.lock"


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            "job_id": os.environ.get("RAY_JOB_SUBMISSION_ID") or None}


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    age = time.time() - holder.get("heartbeat", 0)
    job = f", Ray job {holder['job_id']}" if holder.get("job_id") else ""
    return f"host {holder.get('host')}, pid {holder.get('pid')}{job}, since {since}; last heartbeat {age:.0f} s ago"


def _alive_here(holder: dict) -> bool:
    """Whether the holder is a live process on this host (False for another host: we cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def is_held(run_dir: str | os.PathLike, timeout_s: float) -> bool:
    """Whether a run holds ``run_dir`` now: its lease file names a live process here, or one elsewhere whose
    heartbeat is fresher than ``timeout_s``. (A local or shared directory.)"""
    try:
        with open(os.path.join(run_dir, LEASE)) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return False
    if holder.get("host") == socket.gethostname():
        return _alive_here(holder)
    return time.time() - holder.get("heartbeat", 0) < timeout_s


class RunLease:
    """``with RunLease(run_dir, timeout_s):`` holds the run directory for the block."""

    def __init__(self, run_dir: epath.Path, timeout_s: float, say: Callable[[str], None] = print):
        self.run_dir, self.timeout_s, self.say = run_dir, timeout_s, say
        self.store = _GcsLease(run_dir) if is_remote(run_dir) else _FileLease(run_dir)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RunLease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        me = _me()
        holder = self.store.take(me)
        if holder is not None:
            fresh = time.time() - holder.get("heartbeat", 0) < self.timeout_s
            here_and_gone = holder.get("host") == me["host"] and not _alive_here(holder)
            if fresh and not here_and_gone:
                self.store.give_back()
                raise RunDirInUse(f"run directory {self.run_dir} is in use by snndist ({_describe(holder)}); "
                                  "stop that run first")
            try:
                self.store.take_over(me, holder)
            except Exception:  # another process took it over first (gs:// precondition)
                self.store.give_back()
                raise RunDirInUse(f"run directory {self.run_dir} was just taken over by another snndist run; "
                                  "stop that run first") from None
            self.say(f"warning: took over the lease on {self.run_dir} from a run that stopped without "
                     f"releasing it ({_describe(holder)})")
        self._thread = threading.Thread(target=self._beat, name="snndist-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        period = max(0.5, min(10.0, self.timeout_s / 4))
        while not self._stop.wait(period):
            try:
                self.store.renew()
            except Exception as err:  # the lease was taken from us, or the store is unreachable
                self.lost = f"{type(err).__name__}: {err}"
                return

    def check(self) -> None:
        """Raise if the lease was lost (another process took the directory over): stop writing at once."""
        if self.lost:
            raise RunFailed(f"lost the lease on run directory {self.run_dir} ({self.lost}); stopped without "
                            "writing more, since another run may own it now")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            self.store.release()


class _FileLease:
    """A local or shared directory: flock on the lock file plus the lease file with the heartbeat."""

    def __init__(self, run_dir: epath.Path):
        self.path, self.lock_path = os.path.join(run_dir, LEASE), os.path.join(run_dir, LOCK)
        self.me: dict | None = None
        self._lock = None

    def take(self, me: dict) -> dict | None:
        """Lock and write the lease; the holder found instead (lock held or lease fresh elsewhere), or None."""
        import fcntl

        self._lock = open(self.lock_path, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read() or {"host": "?", "pid": "?"}
            return {**holder, "heartbeat": time.time()}  # a held OS lock is as fresh as a heartbeat
        holder = self._read()
        if holder is not None and holder.get("pid") != me["pid"]:
            return holder
        self._write(me)
        return None

    def take_over(self, me: dict, holder: dict) -> None:
        self._write(me)

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _write(self, me: dict) -> None:
        self.me = me
        tmp = f"{self.path}.{me['pid']}.tmp"
        with open(tmp, "w") as f:
            json.dump({**me, "heartbeat": time.time()}, f)
        os.replace(tmp, self.path)

    def renew(self) -> None:
        holder = self._read()
        if holder is None or holder.get("pid") != self.me["pid"] or holder.get("host") != self.me["host"]:
            raise RuntimeError(f"the lease now names {holder and _describe(holder)}")
        self._write(self.me)

    def give_back(self) -> None:
        self._unlock()

    def release(self) -> None:
        if self.me is not None and (self._read() or {}).get("pid") == self.me["pid"]:
            os.unlink(self.path)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None


class _GcsLease:
    """A gs:// directory: the lease object, created if absent, renewed and deleted at our generation only."""

    def __init__(self, run_dir: epath.Path):
        bucket, _, prefix = str(run_dir).removeprefix("gs://").partition("/")
        self.bucket_name, self.name = bucket, f"{prefix.rstrip('/')}/{LEASE}".lstrip("/")
        self.me: dict | None = None
        self.generation: int | None = None

    def _blob(self):
        from google.cloud import storage

        return storage.Client().bucket(self.bucket_name).blob(self.name)

    def take(self, me: dict) -> dict | None:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self._put(me, if_generation_match=0)  # only if no lease exists
            return None
        except PreconditionFailed:
            blob = self._blob()
            blob.reload()
            self._found_generation = blob.generation
            return json.loads(blob.download_as_bytes(if_generation_match=blob.generation))

    def take_over(self, me: dict, holder: dict) -> None:
        self._put(me, if_generation_match=self._found_generation)  # fails if the old holder renewed meanwhile

    def _put(self, me: dict, if_generation_match: int) -> None:
        blob = self._blob()
        blob.upload_from_string(json.dumps({**me, "heartbeat": time.time()}), content_type="application/json",
                                if_generation_match=if_generation_match)
        self.me, self.generation = me, blob.generation

    def renew(self) -> None:
        self._put(self.me, if_generation_match=self.generation)

    def give_back(self) -> None:
        pass

    def release(self) -> None:
        if self.generation is not None:
            from google.api_core.exceptions import NotFound, PreconditionFailed

            try:
                self._blob().delete(if_generation_match=self.generation)
            except (NotFound, PreconditionFailed):  # no longer ours: leave it to its holder
                pass
