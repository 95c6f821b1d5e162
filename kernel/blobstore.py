"""Content-addressed blob storage: a local directory (default) or an S3-compatible bucket.

Every blob is stored under a key derived from the SHA-256 of its bytes
(`sha256/ab/cd/abcd…`), so writing the same bytes twice is a cheap no-op and a key always
names exactly one content.

The stores are synchronous. Async callers (aiohttp handlers, procrastinate tasks) must run
them in a worker thread, e.g. ``await asyncio.to_thread(store.put, raw)``, and iterate a
`BlobStream` with ``asyncio.to_thread(next, stream, None)`` chunk by chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import unicodedata
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from kernel.settings import ConfigError

if TYPE_CHECKING:
    from kernel.settings import Settings

DEFAULT_CHUNK_SIZE = 256 * 1024
_KEY_PATTERN = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
# Local temp files start with a dot so they can never match the key pattern.
_TEMP_PREFIX = ".tmp-"


class BlobNotFound(LookupError):
    """No blob is stored under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"blob not found: {key}")
        self.key = key


class InvalidBlobKey(ValueError):
    """The string is not a key this module produces (and must never reach a path or URL)."""

    def __init__(self, key: object) -> None:
        super().__init__(f"invalid blob key: {key!r}")
        self.key = key


def blob_key(data: bytes) -> str:
    """The content address of `data`: ``sha256/<hex[0:2]>/<hex[2:4]>/<hex>``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"sha256/{digest[0:2]}/{digest[2:4]}/{digest}"


def validate_key(key: object) -> str:
    """Return `key` unchanged if it is a well-formed content key, else raise InvalidBlobKey.

    Only lowercase hex digests whose fan-out prefix matches are accepted, which rules out
    path traversal, absolute paths and any other object name in a shared bucket.
    """
    if not isinstance(key, str):
        raise InvalidBlobKey(key)
    match = _KEY_PATTERN.fullmatch(key)
    if match is None:
        raise InvalidBlobKey(key)
    first, second, digest = match.groups()
    if digest[0:2] != first or digest[2:4] != second:
        raise InvalidBlobKey(key)
    return key


# Characters a filename must never carry into a header: control characters (CR/LF would
# split the header), format characters such as U+202E RIGHT-TO-LEFT OVERRIDE (used to
# disguise `evil‮fdp.exe` as `evil.pdf`), and unassigned/surrogate code points.
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_MAX_FILENAME_CHARS = 200
_FALLBACK_FILENAME = "download"


def safe_filename(filename: str | None) -> str:
    """A display-safe version of an untrusted attachment filename (never empty).

    Drops control/format characters and quotes, turns path separators into `_`, collapses
    whitespace, strips leading dots and trims the length while keeping the extension.
    """
    text = unicodedata.normalize("NFC", filename or "")
    kept: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in _DROPPED_CATEGORIES or char in "\"'":
            continue
        if char in "/\\":
            kept.append("_")
        elif category.startswith("Z"):
            kept.append(" ")
        else:
            kept.append(char)
    name = " ".join("".join(kept).split())
    # A leading dot would make a hidden file; trailing dots/spaces are stripped by Windows.
    name = name.lstrip(". ").rstrip(". ")
    if len(name) > _MAX_FILENAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: _MAX_FILENAME_CHARS - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:_MAX_FILENAME_CHARS].rstrip()
    return name or _FALLBACK_FILENAME


def _ascii_fallback(name: str) -> str:
    """ASCII approximation for the legacy `filename=` parameter (accents dropped, rest `_`)."""
    decomposed = unicodedata.normalize("NFKD", name)
    chars = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        # `%` is replaced because some browsers percent-decode the plain parameter;
        # `\` and `"` are already gone, but guard anyway: they end a quoted-string.
        if " " <= char <= "~" and char not in '%"\\':
            chars.append(char)
        else:
            chars.append("_")
    return "".join(chars) or _FALLBACK_FILENAME


def content_disposition(filename: str | None, *, inline: bool = False) -> str:
    """A safe `Content-Disposition` value for an untrusted filename.

    Returns ``attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`` (RFC 6266
    / RFC 8187): old clients read the ASCII fallback, current browsers the UTF-8 form.
    """
    name = safe_filename(filename)
    disposition = "inline" if inline else "attachment"
    encoded = urllib.parse.quote(name, safe="")
    return f"{disposition}; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{encoded}"


class BlobStream:
    """An iterator over a blob's bytes in chunks, with its total size.

    Holds an open file or HTTP response: close it, or use it as a context manager.
    """

    def __init__(self, chunks: Iterator[bytes], size: int, close: Callable[[], None]) -> None:
        self.size = size
        self._chunks = chunks
        self._close = close
        self._closed = False

    def __iter__(self) -> BlobStream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def read_all(self) -> bytes:
        """Read the remaining chunks into memory and close the stream."""
        with self:
            return b"".join(self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BlobStore(ABC):
    """Content-addressed blob storage. Synchronous: from async code use `asyncio.to_thread`."""

    @abstractmethod
    def put(self, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        """Store `data` and return its key. Idempotent: the same bytes give one object."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole blob; raises BlobNotFound."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    @abstractmethod
    def open_stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobStream:
        """Stream a (large) blob in chunks; raises BlobNotFound before the first chunk."""

    @abstractmethod
    def presigned_get_url(
        self, key: str, *, ttl_seconds: int, filename: str | None, content_type: str
    ) -> str | None:
        """A short-lived URL a browser can download from, or None if the store cannot sign."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release network resources (connection pools)."""


class LocalBlobStore(BlobStore):
    """Blobs as files under `root`, fanned out as ``root/sha256/ab/cd/<hex>``.

    Writes go to a temp file in the target directory, are fsynced and then renamed into
    place, so a crash never leaves a partial file under a final name, and concurrent
    writers of the same content each rename a complete copy. The content type is not kept:
    the download path takes it from the attachment metadata in Postgres.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file a valid key maps to (validated, so it always stays under `root`)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        key = blob_key(data)
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            # A complete copy is already there: renames are atomic, so a file under the
            # final name is whole unless something outside this class truncated it.
            if path.stat().st_size == len(data):
                return key
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp picks a fresh random name (O_EXCL), so leftovers from a crashed writer or
        # a concurrent writer of the same blob never collide with ours.
        fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(data)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        self._fsync_directory(path.parent)
        return key

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        # Makes the rename itself durable; not all platforms allow opening a directory.
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def get(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path_for(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc

    def open_stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobStream:
        try:
            handle = self.path_for(key).open("rb")
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc
        size = os.fstat(handle.fileno()).st_size
        return BlobStream(iter(lambda: handle.read(chunk_size), b""), size, handle.close)

    def presigned_get_url(
        self, key: str, *, ttl_seconds: int, filename: str | None, content_type: str
    ) -> str | None:
        validate_key(key)
        return None


def parse_endpoint_url(endpoint_url: str) -> tuple[str, bool]:
    """Split an S3 endpoint URL into minio's ``(host[:port], secure)``.

    Accepts ``http://host[:port]``, ``https://host[:port]`` and a bare ``host[:port]``
    (treated as https). Paths, queries and credentials in the URL are refused.
    """
    text = endpoint_url.strip()
    if "://" not in text:
        text = "https://" + text
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in {"http", "https"}:
        raise ConfigError(f"S3 endpoint must be http or https, got {endpoint_url!r}")
    if parsed.username or parsed.password:
        raise ConfigError("S3 endpoint URL must not contain credentials")
    if parsed.path not in {"", "/"} or parsed.query or parsed.fragment:
        raise ConfigError(f"S3 endpoint URL must be scheme://host[:port], got {endpoint_url!r}")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ConfigError(f"S3 endpoint has an invalid port: {endpoint_url!r}") from exc
    host = parsed.hostname
    if not host:
        raise ConfigError(f"S3 endpoint has no host: {endpoint_url!r}")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return (f"{host}:{port}" if port else host), parsed.scheme == "https"


_MISSING_OBJECT_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_BUCKET_RACE_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class S3BlobStore(BlobStore):
    """Blobs as objects in one S3 bucket (AWS, MinIO, SeaweedFS), through `minio`.

    The bucket is created on construction if missing. The client is thread-safe; call
    `close()` to drop its connection pool.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str | None = None,
        create_bucket: bool = True,
        connect_timeout_seconds: float = 10.0,
        read_timeout_seconds: float = 120.0,
    ) -> None:
        host, secure = parse_endpoint_url(endpoint_url)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        # minio's default pool waits up to 5 minutes on connect; a helpdesk request or a
        # worker job should fail much sooner when the store is unreachable.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_seconds, read=read_timeout_seconds),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            host,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; losing a creation race to another process is fine."""
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in _BUCKET_RACE_CODES:
                raise
            # "AlreadyExists" may also mean someone else's bucket: only accept it if we can
            # actually reach it.
            if not self.client.bucket_exists(self.bucket):
                raise

    def close(self) -> None:
        self._http.clear()

    def _stat_size(self, key: str) -> int | None:
        try:
            return self.client.stat_object(self.bucket, key).size
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT_CODES:
                return None
            raise

    def put(self, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        key = blob_key(data)
        # Same key and size means same bytes (the key is their hash): skip the upload.
        if self._stat_size(key) == len(data):
            return key
        self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
        )
        return key

    def get(self, key: str) -> bytes:
        with self.open_stream(key) as stream:
            return b"".join(stream)

    def exists(self, key: str) -> bool:
        return self._stat_size(validate_key(key)) is not None

    def size(self, key: str) -> int:
        size = self._stat_size(validate_key(key))
        if size is None:
            raise BlobNotFound(key)
        return size

    def open_stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobStream:
        validate_key(key)
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT_CODES:
                raise BlobNotFound(key) from exc
            raise

        def release() -> None:
            response.close()
            response.release_conn()

        size = int(response.headers.get("Content-Length", "-1"))
        return BlobStream(response.stream(chunk_size), size, release)

    def presigned_get_url(
        self, key: str, *, ttl_seconds: int, filename: str | None, content_type: str
    ) -> str | None:
        """A GET URL valid for `ttl_seconds` that makes S3 answer with our filename and type.

        The URL is signed for the configured endpoint host, so that host must be reachable
        by the browser that follows the redirect.
        """
        validate_key(key)
        return self.client.presigned_get_object(
            self.bucket,
            key,
            expires=timedelta(seconds=ttl_seconds),
            response_headers={
                "response-content-disposition": content_disposition(filename),
                "response-content-type": content_type,
            },
        )


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The store selected by BLOB_STORE (creates the local directory or S3 bucket if missing)."""
    if settings.blob_store == "local":
        return LocalBlobStore(settings.local_blob_dir)
    if settings.blob_store == "s3":
        missing = [
            name
            for name, value in (
                ("S3_ENDPOINT_URL", settings.s3_endpoint_url),
                ("S3_ACCESS_KEY_ID", settings.s3_access_key_id),
                ("S3_SECRET_ACCESS_KEY", settings.s3_secret_access_key),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"BLOB_STORE=s3 needs {', '.join(missing)}")
        return S3BlobStore(
            endpoint_url=settings.s3_endpoint_url or "",
            access_key=settings.s3_access_key_id or "",
            secret_key=settings.s3_secret_access_key or "",
            bucket=settings.s3_bucket,
        )
    raise ConfigError(f"BLOB_STORE must be local or s3, got {settings.blob_store!r}")
