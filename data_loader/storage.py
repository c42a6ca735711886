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


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI, never a credential."""

    user_error = True  # the CLI prints it as one line


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # filesystem path (bucket/key for S3, absolute path locally)
    uri: str  # the URI as the user wrote it, normalised; used in messages

    def join(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts), join_uri(self.uri, *parts))

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
        return Location(_s3_filesystem(endpoint_url(endpoint)), path, "s3://" + path)
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
        raise StorageError(f"{loc.uri}: cannot reach storage ({_short(e)})") from None


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
        raise StorageError(f"{loc.uri}: cannot read ({_short(e)})") from None


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
        raise StorageError(f"{loc.uri}: cannot write ({_short(e)})") from None


def is_transient(e: BaseException) -> bool:
    """Worth retrying: network and service errors. Not: a full disk, a missing file, a permission."""
    text = str(e).lower()
    permanent = ("no space left", "not found", "permission denied", "access denied", "escape")
    return not any(p in text for p in permanent)


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


def makedirs(loc: Location) -> None:
    try:
        loc.fs.create_dir(loc.path, recursive=True)
    except OSError as e:
        raise StorageError(f"{loc.uri}: cannot create ({_short(e)})") from None


def delete_dir(loc: Location) -> None:
    try:
        if exists(loc):
            loc.fs.delete_dir(loc.path)
    except OSError as e:
        raise StorageError(f"{loc.uri}: cannot delete ({_short(e)})") from None


def walk_files(loc: Location, rejected: list | None = None) -> Iterator[tuple[str, int]]:
    """Yield (relative path, size) of every file below loc, sorted, skipping hidden temp files.

    A local symbolic link that resolves outside loc is never yielded (an input tree must not reach into the
    rest of the machine); its relative path is appended to `rejected` when given, so callers can list it.
    """
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError as e:
        raise StorageError(f"{loc.uri}: cannot list ({_short(e)})") from None
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
        raise StorageError(f"{loc.uri}: cannot list ({_short(e)})") from None
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


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: expected s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def _short(e: BaseException) -> str:
    # pyarrow's messages can be long; the first line says what happened. They carry no credentials.
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
