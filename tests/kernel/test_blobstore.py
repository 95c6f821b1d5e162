"""Blob stores: the local directory store and the S3 store against a real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from kernel.blobstore import (
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    S3BlobStore,
    blob_key,
    blob_store_from_settings,
    content_disposition,
    parse_endpoint_url,
)
from kernel.settings import ConfigError, Settings
from tests.fixtures.s3 import S3Server, empty_and_remove_bucket

MULTI_MB = 6 * 1024 * 1024 + 17  # above minio's 5 MiB part size: a multipart upload on S3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")


def stored_names(store: BlobStore) -> list[str]:
    """Every object/file the store holds (for local: every file, temp files included)."""
    if isinstance(store, LocalBlobStore):
        return sorted(
            path.relative_to(store.root).as_posix()
            for path in store.root.rglob("*")
            if path.is_file()
        )
    assert isinstance(store, S3BlobStore)
    return sorted(
        str(item.object_name) for item in store.client.list_objects(store.bucket, recursive=True)
    )


def plant_corrupt_copy(store: BlobStore, key: str, content: bytes) -> None:
    """Put `content` under `key` behind the store's back (a damaged blob)."""
    if isinstance(store, LocalBlobStore):
        path = store.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    else:
        assert isinstance(store, S3BlobStore)
        store.client.put_object(store.bucket, key, io.BytesIO(content), len(content))


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    """Plain urllib GET returning status, headers and body, also for 4xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - test URL
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()


# --- both stores -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 4, os.urandom(MULTI_MB)],
    ids=["empty", "all-byte-values", "multi-mb"],
)
def test_put_then_get_round_trips_exact_bytes(store: BlobStore, data: bytes) -> None:
    key = store.put(data, content_type="message/rfc822")

    assert store.get(key) == data
    assert store.exists(key)
    assert store.size(key) == len(data)
    if isinstance(store, S3BlobStore):
        assert store.client.stat_object(store.bucket, key).content_type == "message/rfc822"


def test_key_is_the_sha256_of_the_content(store: BlobStore) -> None:
    data = b"Message-ID: <a@example.com>\r\n\r\nhello"
    digest = hashlib.sha256(data).hexdigest()

    key = store.put(data)

    assert key == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert key == blob_key(data)
    assert stored_names(store) == [key]


def test_put_is_idempotent(store: BlobStore) -> None:
    data = os.urandom(4096)
    first = store.put(data, content_type="text/plain")
    if isinstance(store, LocalBlobStore):
        inode_before = store.path_for(first).stat().st_ino

    second = store.put(data, content_type="application/octet-stream")

    assert second == first
    assert stored_names(store) == [first]
    assert store.get(first) == data
    # The second put must not have rewritten anything.
    if isinstance(store, LocalBlobStore):
        assert store.path_for(first).stat().st_ino == inode_before
    else:
        assert isinstance(store, S3BlobStore)
        assert store.client.stat_object(store.bucket, first).content_type == "text/plain"


def test_different_content_gets_different_keys(store: BlobStore) -> None:
    keys = {store.put(b"one"), store.put(b"two"), store.put(b"one")}

    assert len(keys) == 2
    assert stored_names(store) == sorted(keys)


def test_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    key = blob_key(b"never stored")

    assert not store.exists(key)
    with pytest.raises(BlobNotFound) as excinfo:
        store.get(key)
    assert excinfo.value.key == key
    assert key in str(excinfo.value)
    with pytest.raises(BlobNotFound):
        store.size(key)
    with pytest.raises(BlobNotFound):
        store.open_stream(key)


@pytest.mark.parametrize(
    "bad_key",
    [
        "../../etc/passwd",
        "sha256/../../../etc/passwd",
        "/etc/passwd",
        "sha256/ab/cd/" + "0" * 64,  # fan-out does not match the digest
        "sha256/00/00/" + "0" * 63,  # digest too short
        "sha256/AA/AA/" + "A" * 64,  # uppercase is never produced
        "sha256/00/00/" + "0" * 64 + "\n",
        "sha256/00/00/" + "0" * 64 + "/../x",
        "md5/00/00/" + "0" * 64,
        "",
    ],
)
def test_keys_this_module_did_not_produce_are_refused(store: BlobStore, bad_key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        store.get(bad_key)
    with pytest.raises(InvalidBlobKey):
        store.exists(bad_key)
    with pytest.raises(InvalidBlobKey):
        store.size(bad_key)
    with pytest.raises(InvalidBlobKey):
        store.open_stream(bad_key)
    with pytest.raises(InvalidBlobKey):
        store.presigned_get_url(bad_key, ttl_seconds=60, filename="x", content_type="text/plain")


def test_open_stream_yields_the_whole_blob_in_chunks(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    key = store.put(data)

    with store.open_stream(key, chunk_size=64 * 1024) as stream:
        assert stream.size == len(data)
        chunks = list(stream)

    assert b"".join(chunks) == data
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024


def test_concurrent_puts_of_the_same_content_leave_one_good_object(store: BlobStore) -> None:
    data = os.urandom(1024 * 1024)
    writers = 8
    start_together = threading.Barrier(writers)

    def put_once(_: int) -> str:
        start_together.wait(timeout=10)
        return store.put(data)

    with ThreadPoolExecutor(max_workers=writers) as pool:
        keys = list(pool.map(put_once, range(writers)))

    assert set(keys) == {blob_key(data)}
    assert stored_names(store) == [keys[0]]
    assert store.get(keys[0]) == data


def test_put_replaces_a_truncated_copy_under_the_final_key(store: BlobStore) -> None:
    data = os.urandom(10_000)
    key = blob_key(data)
    plant_corrupt_copy(store, key, data[:100])

    assert store.put(data) == key

    assert store.get(key) == data
    assert stored_names(store) == [key]


# --- local store ---------------------------------------------------------------------------


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    keys = [store.put(os.urandom(size)) for size in (0, 1, 5000, 2 * 1024 * 1024)]

    assert stored_names(store) == sorted(keys)
    assert all(store.path_for(key).parent.parent.parent == store.root / "sha256" for key in keys)


def test_local_partial_temp_file_from_a_crash_does_not_break_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(50_000)
    key = blob_key(data)
    fan_out_dir = store.path_for(key).parent
    fan_out_dir.mkdir(parents=True)
    leftover = fan_out_dir / ".tmp-crashed"
    leftover.write_bytes(data[:1000])  # what a writer killed mid-write leaves behind

    assert not store.exists(key)  # a temp file never counts as the blob
    assert store.put(data) == key

    assert store.get(key) == data
    assert store.path_for(key).stat().st_size == len(data)
    # Someone else's temp file is left alone (it might belong to a live writer).
    assert leftover.read_bytes() == data[:1000]
    assert sorted(path.name for path in fan_out_dir.iterdir()) == sorted(
        [".tmp-crashed", key[-64:]]
    )


def test_local_store_has_no_presigned_urls(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = store.put(b"x")

    assert (
        store.presigned_get_url(key, ttl_seconds=60, filename="x.txt", content_type="text/plain")
        is None
    )


# --- S3 store ---------------------------------------------------------------------------


def test_presigned_url_downloads_exact_bytes_with_requested_headers(
    s3_store: S3BlobStore,
) -> None:
    data = os.urandom(200_000)
    key = s3_store.put(data)
    filename = 'Q3 "final" résumé\r\n../report.pdf'

    url = s3_store.presigned_get_url(
        key, ttl_seconds=60, filename=filename, content_type="application/pdf"
    )

    assert url is not None
    status, headers, body = http_get(url)
    assert status == 200
    assert body == data
    assert headers["Content-Disposition"] == content_disposition(filename)
    assert headers["Content-Disposition"] == (
        'attachment; filename="Q3 final resume.._report.pdf"; '
        "filename*=UTF-8''Q3%20final%20r%C3%A9sum%C3%A9.._report.pdf"
    )
    assert headers["Content-Type"] == "application/pdf"


def test_presigned_url_cannot_be_altered(s3_store: S3BlobStore) -> None:
    key = s3_store.put(b"secret attachment")
    url = s3_store.presigned_get_url(
        key, ttl_seconds=60, filename="a.txt", content_type="text/plain"
    )
    assert url is not None

    tampered = url.replace(
        urllib.parse.quote("a.txt", safe=""), urllib.parse.quote("a.html", safe="")
    )
    assert tampered != url
    assert http_get(tampered)[0] == 403
    other_key = s3_store.put(b"another blob")
    assert http_get(url.replace(key, other_key))[0] == 403


def test_presigned_url_stops_working_after_its_ttl(s3_store: S3BlobStore) -> None:
    key = s3_store.put(b"short-lived")
    signed_at = time.time()
    url = s3_store.presigned_get_url(
        key, ttl_seconds=2, filename="a.txt", content_type="text/plain"
    )
    assert url is not None
    # X-Amz-Date has one-second resolution, so the URL is good for at least one second.
    status, _, body = http_get(url)
    assert (status, body) == (200, b"short-lived")

    time.sleep(max(0.0, signed_at + 3.2 - time.time()))

    assert http_get(url)[0] == 403


def test_unsigned_requests_are_refused(s3_store: S3BlobStore, s3_server: S3Server) -> None:
    key = s3_store.put(b"private")

    status, _, body = http_get(f"{s3_server.endpoint_url}/{s3_store.bucket}/{key}")

    assert status == 403
    assert b"private" not in body


def test_wrong_credentials_are_refused(s3_store: S3BlobStore, s3_server: S3Server) -> None:
    key = s3_store.put(b"private")
    host, _ = parse_endpoint_url(s3_server.endpoint_url)
    wrong_secret = Minio(
        host, access_key=s3_server.access_key, secret_key="not-the-secret", secure=False
    )
    unknown_key = Minio(host, access_key="nobody", secret_key=s3_server.secret_key, secure=False)
    try:
        for client in (wrong_secret, unknown_key):
            with pytest.raises(S3Error) as excinfo:
                client.stat_object(s3_store.bucket, key)
            assert excinfo.value.response.status == 403
            with pytest.raises(S3Error) as excinfo:
                client.list_buckets()
            assert excinfo.value.code in {"SignatureDoesNotMatch", "InvalidAccessKeyId"}
    finally:
        wrong_secret._http.clear()
        unknown_key._http.clear()

    with pytest.raises(S3Error):
        S3BlobStore(
            endpoint_url=s3_server.endpoint_url,
            access_key=s3_server.access_key,
            secret_key="not-the-secret",
            bucket=s3_store.bucket,
        )


def test_bucket_is_created_once_when_stores_race_to_create_it(s3_server: S3Server) -> None:
    bucket = f"race-{uuid.uuid4().hex[:16]}"
    contenders = 6
    start_together = threading.Barrier(contenders)

    def open_store(_: int) -> S3BlobStore:
        start_together.wait(timeout=10)
        return S3BlobStore(
            endpoint_url=s3_server.endpoint_url,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=bucket,
        )

    with ThreadPoolExecutor(max_workers=contenders) as pool:
        stores = list(pool.map(open_store, range(contenders)))
    try:
        key = stores[0].put(b"shared")
        assert all(store.get(key) == b"shared" for store in stores)
        assert [b.name for b in stores[0].client.list_buckets()].count(bucket) == 1
    finally:
        empty_and_remove_bucket(stores[0].client, bucket)
        for store in stores:
            store.close()


# --- helpers and configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            'say "hi".txt',
            "attachment; filename=\"say hi.txt\"; filename*=UTF-8''say%20hi.txt",
        ),
        (
            "it's.txt",
            "attachment; filename=\"its.txt\"; filename*=UTF-8''its.txt",
        ),
        (
            "evil\r\nSet-Cookie: a=b.txt",
            'attachment; filename="evilSet-Cookie: a=b.txt"; '
            "filename*=UTF-8''evilSet-Cookie%3A%20a%3Db.txt",
        ),
        (
            "../../etc/passwd",
            "attachment; filename=\"_.._etc_passwd\"; filename*=UTF-8''_.._etc_passwd",
        ),
        (
            "..\\..\\windows\\win.ini",
            "attachment; filename=\"_.._windows_win.ini\"; filename*=UTF-8''_.._windows_win.ini",
        ),
        (
            "résumé.pdf",
            "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        (
            "报告.docx",
            "attachment; filename=\"__.docx\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.docx",
        ),
        (
            "invoice\u202efdp.exe",  # right-to-left override disguising an .exe
            "attachment; filename=\"invoicefdp.exe\"; filename*=UTF-8''invoicefdp.exe",
        ),
        ("100%.txt", "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
        ("  \t..hidden  ", "attachment; filename=\"hidden\"; filename*=UTF-8''hidden"),
        ("a;b=c.txt", "attachment; filename=\"a;b=c.txt\"; filename*=UTF-8''a%3Bb%3Dc.txt"),
        ("", "attachment; filename=\"download\"; filename*=UTF-8''download"),
        (None, "attachment; filename=\"download\"; filename*=UTF-8''download"),
        ('"\r\n/', "attachment; filename=\"_\"; filename*=UTF-8''_"),
        ("\x00\x07\x1b", "attachment; filename=\"download\"; filename*=UTF-8''download"),
    ],
)
def test_content_disposition_sanitises_filenames(filename: str | None, expected: str) -> None:
    header = content_disposition(filename)

    assert header == expected
    assert header.isascii()
    assert all(" " <= char <= "~" for char in header)


def test_content_disposition_trims_long_names_but_keeps_the_extension() -> None:
    header = content_disposition("x" * 500 + ".pdf")

    ascii_name = header.split('filename="', 1)[1].split('"', 1)[0]
    assert len(ascii_name) == 200
    assert ascii_name.endswith("xx.pdf")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", ("127.0.0.1:9000", False)),
        ("https://s3.example.com", ("s3.example.com", True)),
        ("https://s3.example.com/", ("s3.example.com", True)),
        ("minio:9000", ("minio:9000", True)),
        ("http://[::1]:9000", ("[::1]:9000", False)),
    ],
)
def test_parse_endpoint_url(url: str, expected: tuple[str, bool]) -> None:
    assert parse_endpoint_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["ftp://host", "http://host/bucket", "http://user:pw@host", "http://host:port", "http://"],
)
def test_parse_endpoint_url_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint_url(url)


def test_blob_store_from_settings_local(tmp_path: Path) -> None:
    settings = Settings(blob_store="local", local_blob_dir=tmp_path / "var" / "blobs")

    store = blob_store_from_settings(settings)

    assert isinstance(store, LocalBlobStore)
    key = store.put(b"data")
    assert (tmp_path / "var" / "blobs" / key).read_bytes() == b"data"


def test_blob_store_from_settings_s3(s3_server: S3Server) -> None:
    settings = Settings(
        blob_store="s3",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=f"settings-{uuid.uuid4().hex[:12]}",
    )

    store = blob_store_from_settings(settings)
    try:
        assert isinstance(store, S3BlobStore)
        assert store.bucket == settings.s3_bucket
        assert store.get(store.put(b"data")) == b"data"
    finally:
        assert isinstance(store, S3BlobStore)
        empty_and_remove_bucket(store.client, store.bucket)
        store.close()


def test_blob_store_from_settings_s3_needs_endpoint_and_credentials() -> None:
    with pytest.raises(ConfigError, match=r"S3_ENDPOINT_URL.*S3_SECRET_ACCESS_KEY"):
        blob_store_from_settings(Settings(blob_store="s3", s3_access_key_id="key"))
