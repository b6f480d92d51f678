"""Errors a user can act on: the CLI prints their one-line message and exits with ``exit_code``."""


class SnndistError(Exception):
    exit_code = 1


class ConfigError(SnndistError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""

    exit_code = 2


class ClusterError(SnndistError):
    """The Ray cluster cannot be reached, refuses us, or lacks the resources asked for."""


class WorkerError(SnndistError):
    """A worker raised: the message names its rank and carries its error."""

    def __init__(self, rank: int, message: str):
        super().__init__(f"worker {rank} failed: {message}")
        self.rank = rank


class WorkerLost(SnndistError):
    """A worker's process died, or a step outlived its timeout."""

    def __init__(self, rank: int | None, cause: str):
        where = f"worker {rank}" if rank is not None else "a worker"
        super().__init__(f"{where} lost: {cause}")
        self.rank = rank
        self.cause = cause
