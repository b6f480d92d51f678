"""Every error a user can act on, and the one line they see of any error.

The CLI prints ``snndist: error: <message>`` and exits with the error's
``exit_code``: 2 for bad input (nothing was started or written), 75 for a
run stopped on purpose that ``--resume`` continues, 1 otherwise.
"""
from __future__ import annotations


class SnndistError(Exception):
    exit_code = 1


class ConfigError(SnndistError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range; or a bad path or argument."""

    exit_code = 2


class DataError(SnndistError, ValueError):
    """A dataset file is missing or malformed: the message names the file, the sample and the problem.

    Raised in a worker too, where the coordinator passes it on as it is.
    """

    exit_code = 2


class RunDirInUse(SnndistError):
    """Another snndist run holds the run directory's lease."""

    exit_code = 2


class CheckpointError(SnndistError):
    """Checkpoints exist but none can be read."""

    exit_code = 2


class WandbError(SnndistError):
    """W&B cannot start or failed mid-run, and ``logging.wandb.on_error: fail`` says to stop."""

    exit_code = 2


class NirError(SnndistError, ValueError):
    """A NIR file that snndist cannot read or represent: the message names the file, node or edge."""

    exit_code = 2


class StorageError(SnndistError):
    """A write to the run directory failed (no space left, no permission, the bucket refused)."""


class ClusterError(SnndistError):
    """The Ray cluster cannot be reached, refuses us, or lacks the resources asked for."""


class WorkerError(SnndistError):
    """A worker raised (a bug or bad data, not retried): the message names its rank and carries its error."""

    def __init__(self, rank: int, message: str):
        super().__init__(f"worker {rank} failed: {message}")
        self.rank = rank


class JoinFailed(SnndistError):
    """A worker could not join its ``jax.distributed`` group (its port taken, a peer gone): the coordinator
    starts the group again, once, then counts it a lost worker."""


class WorkerLost(SnndistError):
    """A worker's process died, or a step outlived its timeout: recovered from a checkpoint."""

    def __init__(self, rank: int | None, cause: str):
        where = f"worker {rank}" if rank is not None else "a worker"
        super().__init__(f"{where} lost: {cause}")
        self.rank = rank
        self.cause = cause


class OutOfMemory(SnndistError):
    """A worker (or this process) ran out of host or device memory: replaying would hit the same wall."""

    HINT = "try a smaller train.global_batch, more train.workers, or machines with more memory"


class Preempted(SnndistError):
    """SIGTERM/SIGINT or Ray's drain notice: the step in flight finished and a checkpoint committed."""

    exit_code = 75  # EX_TEMPFAIL: try again later, with --resume


class RunFailed(SnndistError):
    """Too many failures, or too many non-finite steps in a row."""


def out_of_device_memory(error: BaseException) -> bool:
    """Whether ``error`` is XLA failing to allocate (``RESOURCE_EXHAUSTED: Out of memory ...``)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text and "memory" in text.lower()


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """What a user sees of ``error``: its text on one line, at most ``limit`` characters.

    Whitespace runs (newlines too) become one space. A text holding a Python
    traceback (as a remote error's does) keeps only its last line, which
    names the exception; an empty one gives the exception's type name.
    """
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        text = text.splitlines()[-1]
    text = " ".join(text.split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
