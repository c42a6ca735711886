"""What goes wrong with storage, and how long it is retried: the error every storage call raises, which of
the errors underneath are worth retrying, and the one retry helper (`with_retries`).

Kept beside data_loader/storage.py (which re-exports all of it) so that file stays about URIs and bytes.
"""

from __future__ import annotations

import errno
import os
import threading
import time

from data_loader import ranges


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI, never a credential.

    `transient` says whether the failure underneath was a network or service error worth retrying (decided by
    `is_transient` on the original exception, which the message alone no longer carries)."""

    user_error = True  # the CLI prints it as one line

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# ---- retries: one helper for every storage error ------------------------------------------------------------
# pyarrow (AwsStandardS3RetryStrategy) and botocore (standard mode) retry each request SDK_ATTEMPTS times within
# ~2 s, silently; `with_retries` is the layer above them that rides out a longer outage (every object-store
# read, write and listing here goes through it, and checkpoint / export uploads as a whole). It retries only
# what `is_transient` calls a network or service error, says so in one line when it first retries, and its
# final error says how long it tried. The budget is MASKGAN_STORAGE_RETRY_S seconds (default 60).

SDK_ATTEMPTS = 3
RETRY_ENV = "MASKGAN_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 60.0
_inside = threading.local()  # set while a with_retries call runs: inner storage calls do not retry again

_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG}  # beyond the OSError subclasses
# pyarrow raises every S3 failure as a plain OSError without errno; the only structure it keeps is the AWS SDK's
# error name in the message ("AWS Error ACCESS_DENIED during PutObject operation: ..."), so these are matched
# as text. Anything else from S3 (NETWORK_CONNECTION, SLOW_DOWN, INTERNAL_FAILURE, ...) is worth a retry.
_PERMANENT_AWS_ERRORS = ("AWS Error ACCESS_DENIED", "AWS Error NO_SUCH_BUCKET", "AWS Error NO_SUCH_KEY",
                         "AWS Error RESOURCE_NOT_FOUND", "AWS Error INVALID_ACCESS_KEY_ID",
                         "AWS Error SIGNATURE_DOES_NOT_MATCH", "AWS Error INVALID_BUCKET_NAME")
_TRANSIENT_S3_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                       "Throttling", "ThrottlingException"}


def is_transient(e: BaseException) -> bool:
    """Worth retrying: network and service errors. Not: a full disk, a missing file, a permission, a bad path."""
    if isinstance(e, StorageError):
        return e.transient
    if isinstance(e, OSError):
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if e.errno in _PERMANENT_ERRNOS:
            return False
        return not any(name in str(e) for name in _PERMANENT_AWS_ERRORS)
    if type(e).__module__.split(".")[0] in ("botocore", "boto3"):
        return _boto_transient(e)
    return False


def _boto_transient(e: BaseException) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    if isinstance(e, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, S3UploadFailedError)):
        return True
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or e.response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES
    return False


def retry_budget_s() -> float:
    """Seconds `with_retries` keeps trying: MASKGAN_STORAGE_RETRY_S, else 60 (0: no retries above the SDK's)."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = raw
    return float(ranges.check(RETRY_ENV, value, "[0, 86400]"))


def with_retries(fn, what: str | None = None, budget_s: float | None = None, base: float = 0.5, cap: float = 15.0,
                 log=None):
    """Run fn(), retrying transient storage errors with capped exponential backoff for up to `budget_s` seconds
    (default `retry_budget_s()`). Long enough to ride out an object-store blip during a checkpoint upload;
    permanent errors (disk full, missing, denied) surface at once. The first retry is announced in one line
    (`log`, default print), e.g. "s3://b/k: cannot reach storage (...); retrying for up to 60 s (attempt 2)";
    when the budget runs out the StorageError says how long it tried. Nested calls (a storage primitive inside
    a retried upload) run once: the outermost call owns the budget."""
    if getattr(_inside, "active", False):
        return fn()
    budget = retry_budget_s() if budget_s is None else budget_s
    start = time.monotonic()
    prefix = f"{what}: " if what else ""
    _inside.active = True
    try:
        attempt = 1
        while True:
            try:
                return fn()
            except (StorageError, OSError) as e:
                if not is_transient(e):
                    raise
                elapsed = time.monotonic() - start
                delay = min(cap, base * 2 ** (attempt - 1), budget - elapsed)
                if delay <= 0:
                    if attempt == 1:
                        raise  # no budget: the error as it came
                    raise StorageError(f"{prefix}{first_line(e)}; gave up after retrying for {elapsed:.0f} s "
                                       f"({attempt} attempts; {RETRY_ENV}={budget:g})", transient=True) from None
                if attempt == 1:
                    (log or _announce)(f"{prefix}{first_line(e)}; retrying for up to {budget:g} s (attempt 2)")
                time.sleep(delay)
                attempt += 1
    finally:
        _inside.active = False


def _announce(line: str) -> None:
    print(line, flush=True)


def first_line(e: BaseException) -> str:
    # pyarrow's messages can be long; the first line says what happened. They carry no credentials.
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
