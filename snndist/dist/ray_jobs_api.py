"""What snndist relies on in Ray's job SDK beyond its documented API, in one place.

Tracks Ray 2.60 (the version ``pyproject.toml`` pins): the SDK has no
request timeout, so ``bounded_client`` overrides its private
``_do_request``; it reports failures as exceptions whose *texts* carry the
reason (``Authentication failed``/``required``, ``status code 404``,
``Version check returned 404``, ``WebSocket``), which ``translate_errors``
matches; and it logs at INFO under the loggers ``quiet_logs`` names. When
Ray is upgraded, check these against its SDK first.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Iterator

from snndist.errors import ClusterError, SnndistError, one_line

RAY_VERSION = "2.60"
AUTH_DOC = ("set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token to the cluster's token, "
            "which `ray get-auth-token` prints on the head")


def bounded_client(address: str, headers: dict[str, str], timeout: tuple[float, float]):
    """A ``JobSubmissionClient`` whose every HTTP request is bounded by ``timeout`` (connect, read)."""
    from ray.job_submission import JobSubmissionClient

    class _Bounded(JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):  # every SDK request goes here
            kwargs.setdefault("timeout", timeout)
            return super()._do_request(method, endpoint, **kwargs)

    return _Bounded(address, headers=headers)


@contextlib.contextmanager
def translate_errors(address: str, job_id: str | None = None, token_source: str | None = None) -> Iterator[None]:
    """Turn what Ray's SDK, requests and aiohttp raise into one-line ClusterErrors."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except SnndistError:
        raise
    except AuthenticationError as err:
        text = getattr(err, "message", "") or str(err)
        if text.startswith("Authentication failed"):  # 403: a token was sent and refused
            sent = f" from {token_source}" if token_source else ""
            raise ClusterError(f"the Ray cluster at {address} rejected the auth token{sent} "
                               f"({AUTH_DOC})") from None
        if text.startswith("Authentication required"):  # 401: no token was sent
            if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
                raise ClusterError(f"the Ray cluster at {address} requires an auth token, which "
                                   f"RAY_AUTH_MODE=disabled keeps from being sent (unset it; "
                                   f"{AUTH_DOC})") from None
            raise ClusterError(f"the Ray cluster at {address} requires an auth token and none was "
                               f"found ({AUTH_DOC})") from None
        raise ClusterError(f"auth token problem for the Ray cluster at {address}: "
                           f"{one_line(text)}") from None
    except aiohttp.WSServerHandshakeError as err:  # the log stream's websocket
        if err.status in (401, 403):
            raise ClusterError(f"the Ray cluster at {address} rejected the auth token ({AUTH_DOC})") from None
        if err.status == 404 and job_id:
            raise _unknown_job(address, job_id) from None
        raise ClusterError(f"cannot stream logs from the Ray cluster at {address}: "
                           f"HTTP {err.status} {err.message}") from None
    except (requests.exceptions.Timeout, asyncio.TimeoutError, TimeoutError):
        raise ClusterError(f"the Ray cluster at {address} did not answer in time "
                           f"(is the dashboard up and reachable?)") from None
    except (requests.exceptions.RequestException, aiohttp.ClientError, ConnectionError) as err:
        detail = one_line(err, 200) if not isinstance(err, ConnectionError) else ""
        detail = f": {detail}" if detail and "Failed to connect" not in detail else ""
        raise ClusterError(f"cannot reach the Ray dashboard at {address} "
                           f"(is the cluster up, and is this its dashboard URL?){detail}") from None
    except RuntimeError as err:
        text = one_line(err)
        if job_id and "status code 404" in text:
            raise _unknown_job(address, job_id) from None
        if "WebSocket" in text:
            raise ClusterError(f"lost the log stream from the Ray cluster at {address}: {text}") from None
        if "Version check returned 404" in text or "Jobs API is not supported" in text:
            raise ClusterError(f"{address} does not serve Ray's job API "
                               f"(expected the Ray dashboard, http://HOST:8265)") from None
        raise ClusterError(f"the Ray cluster at {address} refused the request: {text}") from None
    except ValueError as err:  # a malformed URL
        raise ClusterError(f"--address {address}: {one_line(err)}") from None


def _unknown_job(address: str, job_id: str) -> ClusterError:
    return ClusterError(f"no job {job_id!r} on the Ray cluster at {address} "
                        f"(`snndist jobs --address {address}` lists them)")


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Keep Ray's INFO lines (package uploads, websocket closes) off the terminal."""
    import ray.job_submission  # noqa: F401  (importing ray configures its loggers: do it first)

    loggers = [logging.getLogger(name) for name in
               ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
