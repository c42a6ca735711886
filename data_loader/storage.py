"""The one storage layer: a URI (local path, file://, s3://) becomes a pyarrow filesystem and a path.

Everything that reads or writes bytes goes through here, so a local directory and a bucket behave the same.
S3 settings come from the standard places (AWS_* environment variables, profiles) plus an optional
endpoint, and reach pyarrow and boto3 identically. Credentials are never logged or put in errors.
This module never imports torch: bytes flow down, models never open files.
"""

from __future__ import annotations

import errno
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI, never a credential.

    `transient` says whether the failure underneath was a network or service error worth retrying (decided by
    `is_transient` on the original exception, which the message alone no longer carries)."""

    user_error = True  # the CLI prints it as one line

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _failed(loc: "Location", doing: str, e: BaseException) -> StorageError:
    return StorageError(f"{loc.uri}: {doing} ({_short(e)})", transient=is_transient(e))


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # filesystem path (bucket/key for S3, absolute path locally)
    uri: str  # the URI as the user wrote it, normalised; used in messages
    endpoint: str | None = None  # the S3 endpoint it was resolved with (boto3 calls use the same one)

    def join(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts), join_uri(self.uri, *parts), self.endpoint)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


def endpoint_url(explicit: str | None = None) -> str | None:
    # AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL, as in boto3.
    return explicit or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_filesystem(endpoint: str | None) -> pafs.S3FileSystem:
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    # Retries with backoff: transient S3 errors must not fail a long run.
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=10)
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def join_uri(uri: str, *parts: str) -> str:
    for p in parts:
        if p.startswith("/") or ".." in p.split("/"):
            raise StorageError(f"refusing path {p!r}: it would escape {uri}")
    return posixpath.join(uri, *parts) if parts else uri


def resolve(uri: str, endpoint: str | None = None) -> Location:
    """Turn a user-given URI into a Location. Local paths are made absolute."""
    if not uri:
        raise StorageError("empty storage URI")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{uri}: an s3:// URI needs a bucket (s3://bucket/prefix)")
        path = (parsed.netloc + "/" + parsed.path.lstrip("/")).rstrip("/")
        endpoint = endpoint_url(endpoint)
        return Location(_s3_filesystem(endpoint), path, "s3://" + path, endpoint)
    if parsed.scheme in ("", "file"):
        local = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme == "file" else uri))
        return Location(pafs.LocalFileSystem(), local, local)
    raise StorageError(f"{uri}: unsupported scheme {parsed.scheme!r} (use a local path or s3://bucket/prefix)")


def exists(loc: Location) -> bool:
    return _info(loc).type != pafs.FileType.NotFound


def is_dir(loc: Location) -> bool:
    return _info(loc).type == pafs.FileType.Directory


def _info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path)
    except OSError as e:
        raise _failed(loc, "cannot reach storage", e) from None


def size(loc: Location) -> int:
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{loc.uri}: not found")
    return int(info.size or 0)


def read_bytes(loc: Location) -> bytes:
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"{loc.uri}: not found") from None
    except OSError as e:
        raise _failed(loc, "cannot read", e) from None


def write_bytes(loc: Location, data: bytes) -> None:
    """Write atomically where the filesystem allows: a reader never sees a half-written file.

    S3 objects appear whole on a successful PUT; locally we write a sibling temp file and rename it.
    """
    try:
        if loc.is_s3:
            with loc.fs.open_output_stream(loc.path) as f:
                f.write(data)
            return
        parent = posixpath.dirname(loc.path)
        loc.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(loc.path)}.{uuid.uuid4().hex}.tmp")
        try:
            with loc.fs.open_output_stream(tmp) as f:
                f.write(data)
            loc.fs.move(tmp, loc.path)
        finally:
            if loc.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                loc.fs.delete_file(tmp)
    except OSError as e:
        raise _failed(loc, "cannot write", e) from None


# ---- retries: one helper for every storage error ------------------------------------------------------------
# pyarrow (AwsStandardS3RetryStrategy) and botocore (standard mode) already retry each request ~10 times within
# seconds; `with_retries` is the layer above them for writes that must ride out a longer outage (a checkpoint
# or export upload), and it retries only what `is_transient` calls a network or service error.

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


def with_retries(fn, what: str, attempts: int = 8, base: float = 0.5, cap: float = 15.0, log=None):
    """Run fn(), retrying transient storage errors with capped exponential backoff (~60 s in all).

    Long enough to ride out an object-store blip during a checkpoint upload; permanent errors (disk full,
    missing, denied) surface at once.
    """
    import time

    for attempt in range(attempts):
        try:
            return fn()
        except (StorageError, OSError) as e:
            if attempt == attempts - 1 or not is_transient(e):
                raise
            delay = min(cap, base * 2 ** attempt)
            if log:
                log(f"{what}: {_short(e)}; retrying in {delay:.1f}s ({attempt + 1}/{attempts - 1})")
            time.sleep(delay)


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode("utf-8")


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def delete_file(loc: Location) -> None:
    """Remove one file or object; nothing to do when it is not there."""
    try:
        if exists(loc):
            loc.fs.delete_file(loc.path)
    except OSError as e:
        raise _failed(loc, "cannot delete", e) from None


def delete_dir(loc: Location) -> None:
    try:
        if exists(loc):
            loc.fs.delete_dir(loc.path)
    except OSError as e:
        raise _failed(loc, "cannot delete", e) from None


def walk_files(loc: Location, rejected: list | None = None) -> Iterator[tuple[str, int]]:
    """Yield (relative path, size) of every file below loc, sorted, skipping hidden temp files.

    A local symbolic link that resolves outside loc is never yielded (an input tree must not reach into the
    rest of the machine); its relative path is appended to `rejected` when given, so callers can list it.
    """
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError as e:
        raise _failed(loc, "cannot list", e) from None
    base = loc.path.rstrip("/") + "/"
    local_root = os.path.realpath(loc.path) if isinstance(loc.fs, pafs.LocalFileSystem) else None
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base):] if info.path.startswith(base) else info.base_name
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if local_root is not None:
            real = os.path.realpath(info.path)
            if real != local_root and not real.startswith(local_root + os.sep):
                link = _first_link(loc.path, rel)  # report a linked folder once, not every file below it
                if rejected is not None and link not in rejected:
                    rejected.append(link)
                continue
        yield rel, int(info.size or 0)


def _first_link(root: str, rel: str) -> str:
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        if os.path.islink(os.path.join(root, *parts[:i])):
            return "/".join(parts[:i])
    return rel


def list_dir(loc: Location) -> list[str]:
    """Names directly below loc (files and folders), sorted."""
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False, allow_not_found=True))
    except OSError as e:
        raise _failed(loc, "cannot list", e) from None
    return sorted(i.base_name for i in infos)


def boto3_client(endpoint: str | None = None):
    """A boto3 S3 client configured like the pyarrow filesystem (bucket operations, multipart uploads)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(endpoint),
        config=Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


# ---- artefacts users download (export): sizes and checksums without reading, multipart uploads -------------
# On S3 these go through boto3, which pyarrow cannot replace here: it records the sha256 as object metadata
# and lets the caller choose the multipart threshold and part size.

MB = 1024 * 1024


@dataclass(frozen=True)
class Multipart:
    threshold: int = 64 * MB  # objects at least this large go up in parts
    chunksize: int = 16 * MB  # the size of each part (S3's minimum is 5 MiB)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # as recorded at upload (a claim, not a check); None where nothing was recorded


def _bucket_key(loc: Location) -> tuple[str, str]:
    bucket, _, key = loc.path.partition("/")
    return bucket, key


def stat(loc: Location) -> ObjectInfo | None:
    """Size (and the sha256 `upload` recorded) of one file or object; None when it is not there."""
    if not loc.is_s3:
        info = _info(loc)
        return None if info.type == pafs.FileType.NotFound else ObjectInfo(int(info.size or 0), None)
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(loc)
    try:
        head = boto3_client(loc.endpoint).head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _failed(loc, "cannot reach storage", e) from None
    except BotoCoreError as e:
        raise _failed(loc, "cannot reach storage", e) from None
    return ObjectInfo(int(head["ContentLength"]), (head.get("Metadata") or {}).get("sha256"))


def upload(loc: Location, data: bytes, multipart: Multipart = Multipart(), log=None) -> None:
    """Write one artefact, retried through outages like a checkpoint upload. On S3: boto3, in parts from
    `multipart.threshold` on, with its sha256 recorded for `stat`; elsewhere `write_bytes`."""
    if not loc.is_s3:
        with_retries(lambda: write_bytes(loc, data), f"upload {loc.uri}", log=log)
        return
    import hashlib
    import io

    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(loc)
    client = boto3_client(loc.endpoint)
    transfer = TransferConfig(multipart_threshold=multipart.threshold, multipart_chunksize=multipart.chunksize,
                              use_threads=False)
    metadata = {"sha256": hashlib.sha256(data).hexdigest()}

    def put():
        try:
            client.upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs={"Metadata": metadata}, Config=transfer)
        except (BotoCoreError, ClientError, S3UploadFailedError) as e:
            raise _failed(loc, "cannot upload", e) from None

    with_retries(put, f"upload {loc.uri}", log=log)


def _short(e: BaseException) -> str:
    # pyarrow's messages can be long; the first line says what happened. They carry no credentials.
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
