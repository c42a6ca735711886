"""The one storage layer: a URI (local path, file://, s3://) becomes a pyarrow filesystem and a path.

Everything that reads or writes bytes goes through here, so a local directory and a bucket behave the same.
S3 settings come from the standard places (AWS_* environment variables, profiles) plus an optional
endpoint, and reach pyarrow and boto3 identically. Credentials are never logged or put in errors.
This module never imports torch: bytes flow down, models never open files.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

# The errors and the one retry helper live in storage_errors; callers keep writing storage.StorageError etc.
from data_loader.storage_errors import (SDK_ATTEMPTS, StorageError, first_line, is_transient,  # noqa: F401
                                        retry_budget_s, with_retries)


def _failed(loc: "Location", doing: str, e: BaseException) -> StorageError:
    return StorageError(f"{loc.uri}: {doing} ({first_line(e)})", transient=is_transient(e))


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
    # A few quick silent retries per request (~2 s against a refused connection); longer outages are
    # `with_retries`' job, which says that it is retrying and for how long (10 attempts here were ~85 s of silence).
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=SDK_ATTEMPTS)
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


def _retried(loc: Location, once):
    """once() through `with_retries` for object stores; local filesystems fail (or succeed) at once."""
    return with_retries(once) if loc.is_s3 else once()


def exists(loc: Location) -> bool:
    return _info(loc).type != pafs.FileType.NotFound


def is_dir(loc: Location) -> bool:
    return _info(loc).type == pafs.FileType.Directory


def _info(loc: Location) -> pafs.FileInfo:
    def once():
        try:
            return loc.fs.get_file_info(loc.path)
        except OSError as e:
            raise _failed(loc, "cannot reach storage", e) from None

    return _retried(loc, once)


def size(loc: Location) -> int:
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{loc.uri}: not found")
    return int(info.size or 0)


def read_bytes(loc: Location) -> bytes:
    def once():
        try:
            with loc.fs.open_input_stream(loc.path) as f:
                return f.read()
        except FileNotFoundError:
            raise StorageError(f"{loc.uri}: not found") from None
        except OSError as e:
            raise _failed(loc, "cannot read", e) from None

    return _retried(loc, once)


def write_bytes(loc: Location, data: bytes) -> None:
    """Write atomically where the filesystem allows: a reader never sees a half-written file.

    S3 objects appear whole on a successful PUT; locally we write a sibling temp file and rename it.
    """
    if loc.is_s3:
        def put():
            try:
                with loc.fs.open_output_stream(loc.path) as f:
                    f.write(data)
            except OSError as e:
                raise _failed(loc, "cannot write", e) from None

        return with_retries(put)
    try:
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


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode("utf-8")


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def delete_file(loc: Location) -> None:
    """Remove one file or object; nothing to do when it is not there."""
    def once():
        try:
            if exists(loc):
                loc.fs.delete_file(loc.path)
        except OSError as e:
            raise _failed(loc, "cannot delete", e) from None

    _retried(loc, once)


def delete_dir(loc: Location) -> None:
    def once():
        try:
            if exists(loc):
                loc.fs.delete_dir(loc.path)
        except OSError as e:
            raise _failed(loc, "cannot delete", e) from None

    _retried(loc, once)


def walk_files(loc: Location, rejected: list | None = None) -> Iterator[tuple[str, int]]:
    """Yield (relative path, size) of every file below loc, sorted, skipping hidden temp files.

    A local symbolic link that resolves outside loc is never yielded (an input tree must not reach into the
    rest of the machine); its relative path is appended to `rejected` when given, so callers can list it.
    """
    infos = _list(loc, recursive=True)
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
    return sorted(i.base_name for i in _list(loc, recursive=False))


def _list(loc: Location, recursive: bool) -> list[pafs.FileInfo]:
    def once():
        try:
            return loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True))
        except OSError as e:
            raise _failed(loc, "cannot list", e) from None

    return _retried(loc, once)


def boto3_client(endpoint: str | None = None):
    """A boto3 S3 client configured like the pyarrow filesystem (bucket operations, multipart uploads)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(endpoint),
        config=Config(retries={"max_attempts": SDK_ATTEMPTS, "mode": "standard"}),
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

    def once():
        try:
            head = boto3_client(loc.endpoint).head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _failed(loc, "cannot reach storage", e) from None
        except BotoCoreError as e:
            raise _failed(loc, "cannot reach storage", e) from None
        return ObjectInfo(int(head["ContentLength"]), (head.get("Metadata") or {}).get("sha256"))

    return with_retries(once)


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
