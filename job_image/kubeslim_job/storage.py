"""S3 access for the job: one client per process, errors mapped to the result contract.

Configuration, in order of precedence:
- endpoint: env AWS_ENDPOINT_URL, else spec.storage.endpoint, else AWS.
- credentials: boto3's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY env, which the
  operator fills from spec.storage.credentialsSecret, or the pod's ambient identity).
- TLS: spec.storage.verifyTLS=false disables verification; otherwise env AWS_CA_BUNDLE (the operator
  mounts spec.storage.caBundle and points this at it) or the system trust store.
- region and addressing style from spec.storage.
- KUBESLIM_S3_MAX_ATTEMPTS (default 5: the first try and 4 retries), KUBESLIM_S3_CONNECT_TIMEOUT (10 s),
  KUBESLIM_S3_READ_TIMEOUT (60 s), KUBESLIM_S3_WORKERS (8): tuning and tests.

Retries, configured once here: botocore's standard retry mode (exponential backoff with full
jitter, at most KUBESLIM_S3_MAX_ATTEMPTS attempts, 5xx/429/throttling codes and refused, reset or
timed-out connections) retries every request. botocore hands a GET's body over once the headers
have arrived, so a connection cut while the body streams (a truncated or reset download) is
outside its retries: `_call` repeats such a read with the same attempt budget and backoff. After
the budget the error becomes a `Transient` (exit 75) naming the field, the URI and the endpoint,
and the Job's backoffLimit decides whether a new pod tries again.

Reads fetch only the bytes they need: `RangedReader` issues Range GETs whose size starts small and
grows while the caller reads sequentially (so reading the first N samples of a big object costs
about N samples, not the object), and `fetch_many` downloads many small objects in parallel with a
bounded number in flight, yielding them in order, so memory stays flat as a dataset grows.
`NpzMember` reads the first rows of one array of a remote .npz the same way (exact Range GETs of
an uncompressed member, a streaming inflate of a compressed one). Every byte received is counted in
`Storage.bytes_read` (reported by the stages and the benchmark).
Secrets are never logged or put in messages.
"""
from __future__ import annotations

import io
import os
import random
import struct
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from kubeslim_api.spec import QuantizationJobSpec

from .errors import BadInput, Transient

T = TypeVar("T")

# Error codes of the S3 API that no retry can fix, with the fix a user needs.
_BAD_CODES = {
    "NoSuchKey": "the object does not exist; upload it or fix the URI",
    "NoSuchBucket": "the bucket does not exist at this endpoint; create it or fix the URI",
    "AccessDenied": "the credentials are not allowed this operation; grant access or fix spec.storage.credentialsSecret",
    "AllAccessDisabled": "access to the bucket is disabled; fix the bucket policy or the URI",
    "InvalidAccessKeyId": "the access key id is unknown to this endpoint; fix spec.storage.credentialsSecret",
    "SignatureDoesNotMatch": "the secret access key is wrong; fix spec.storage.credentialsSecret",
    "InvalidBucketName": "the bucket name is invalid; fix the URI",
    "AuthorizationHeaderMalformed": "the region does not match the bucket; fix spec.storage.region",
    "PermanentRedirect": "the bucket lives in another region or endpoint; fix spec.storage.region or endpoint",
    "InvalidRange": "the object is empty; upload a complete file",
}
# Servers that spell a standard error their own way (versitygw).
_ALIASES = {"XAdminUserNotFound": "InvalidAccessKeyId", "InvalidAccessKeyID": "InvalidAccessKeyId"}
# A server that answered 5xx, 429 or a throttling code on every attempt (a Transient reason).
STORAGE_UNAVAILABLE = "StorageUnavailable"
# The pod does not know whether its Job has a retry left (backoffLimit, attempts so far): say what
# decides it, so a final status does not promise a retry that never comes.
RETRIED = "transient: the Job retries it while spec.runPolicy.backoffLimit allows"
# botocore standard mode's backoff for an error that is not throttling (botocore.retries.standard.
# ExponentialBackoff): rand(0, 1) * min(0.05 s * 2^(attempt-1), 20 s).
_BACKOFF_BASE_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 20
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}


def parse_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key/path -> (bucket, key/path). The key may be empty or end with '/'."""
    if not uri.startswith("s3://"):
        raise BadInput("InvalidURI", f"{uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise BadInput("InvalidURI", f"{uri!r} has no bucket")
    return bucket, key


def join_uri(prefix: str, name: str) -> str:
    return prefix.rstrip("/") + "/" + name.lstrip("/")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Storage:
    def __init__(self, endpoint: str | None = None, region: str = "us-east-1", verify_tls: bool = True,
                 addressing_style: str = "auto"):
        import boto3
        from botocore.config import Config

        self.endpoint = os.environ.get("AWS_ENDPOINT_URL") or endpoint or None
        self.workers = max(1, int(_env_float("KUBESLIM_S3_WORKERS", 8)))
        # Attempts, the first included: botocore's total_max_attempts (its `max_attempts` counts retries only).
        self.max_attempts = max(1, int(_env_float("KUBESLIM_S3_MAX_ATTEMPTS", 5)))
        config = Config(
            region_name=region,
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=_env_float("KUBESLIM_S3_CONNECT_TIMEOUT", 10),
            read_timeout=_env_float("KUBESLIM_S3_READ_TIMEOUT", 60),
            max_pool_connections=self.workers + 4,
            s3={"addressing_style": addressing_style},
        )
        verify: bool | str = True
        if not verify_tls:
            verify = False
        elif os.environ.get("AWS_CA_BUNDLE"):
            verify = os.environ["AWS_CA_BUNDLE"]
        self.client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config, verify=verify)
        self._lock = threading.Lock()
        self.bytes_read = 0

    @classmethod
    def from_spec(cls, spec: QuantizationJobSpec) -> "Storage":
        st = spec.storage
        return cls(endpoint=st.endpoint, region=st.region, verify_tls=st.verify_tls, addressing_style=st.addressing_style)

    # -- error mapping ------------------------------------------------------------------------
    def _where(self) -> str:
        return self.endpoint or "AWS S3"

    def translate(self, exc: BaseException, field: str, uri: str, missing: str = "NoSuchKey") -> Exception:
        """Map a botocore exception to BadInput or Transient, naming the field and the URI."""
        from botocore import exceptions as bx

        subject = f"{field} {uri}"
        if isinstance(exc, bx.ClientError) and getattr(exc, "operation_name", "") == "AssumeRoleWithWebIdentity":
            # Not the object's fault: STS refused the pod's token for spec.storage.credentials.webIdentity
            # (a trust policy without this ServiceAccount or audience, a wrong role). Never retried: a
            # trust policy does not change by itself. The token itself is never put in a message.
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            role = os.environ.get("AWS_ROLE_ARN", "")
            return BadInput("AccessDenied", f"spec.storage.credentials.webIdentity.roleArn {role}: STS refused "
                                            f"AssumeRoleWithWebIdentity ({code}: {err.get('Message', 'no message')}) "
                                            f"for {subject}; the role's trust policy must admit the job pod's "
                                            "ServiceAccount (job.serviceAccountName) and the token's audience")
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            code = _ALIASES.get(code, code)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NotFound"):   # HEAD responses carry no error code
                code = missing
            elif code == "403" or code == "Forbidden":
                code = "AccessDenied"
            if code in _BAD_CODES:
                return BadInput(code, f"{subject}: {code} — {_BAD_CODES[code]}")
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                # One reason for every answer of a server that is there but failing (S3's own codes
                # would read as ours: its InternalError is not the job's InternalError crash).
                return Transient(STORAGE_UNAVAILABLE, f"{subject}: {code} (HTTP {status}) from {self._where()} "
                                                      f"{self.max_attempts} times; {RETRIED}")
            return BadInput(code, f"{subject}: {code} (HTTP {status}) — {err.get('Message', 'request rejected')}")
        if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            return Transient("StorageTimeout", f"{subject}: timed out talking to {self._where()}; {RETRIED}")
        if isinstance(exc, bx.SSLError):
            return BadInput("TLSVerifyFailed", f"{subject}: TLS verification against {self._where()} failed; "
                                               "set spec.storage.caBundle (or verifyTLS: false for a test server)")
        if isinstance(exc, bx.EndpointConnectionError):
            # Transient: a refused connection is as often an S3 server that is restarting or down
            # as a wrong address, and backoffLimit bounds what retrying a wrong one costs.
            return Transient("EndpointUnreachable", f"{subject}: cannot connect to {self._where()} (connection refused or "
                                                    f"unknown host); {RETRIED} — if the address is wrong, fix "
                                                    "spec.storage.endpoint")
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return BadInput("NoCredentials", f"{subject}: no S3 credentials found; set spec.storage.credentialsSecret "
                                             "or give the pod an identity")
        if isinstance(exc, (bx.ConnectionClosedError, bx.ResponseStreamingError, bx.IncompleteReadError,
                            ConnectionError, TimeoutError)):
            return Transient("StorageConnectionLost", f"{subject}: connection to {self._where()} lost; {RETRIED}")
        if isinstance(exc, bx.ParamValidationError):
            return BadInput("InvalidURI", f"{subject}: {exc}")
        return Transient("StorageError", f"{subject}: {type(exc).__name__} talking to {self._where()}; {RETRIED}")

    def _call(self, field: str, uri: str, fn: Callable[[], T], missing: str = "NoSuchKey") -> T:
        from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError

        attempt = 1
        while True:
            try:
                return fn()
            except (ResponseStreamingError, IncompleteReadError) as exc:
                # The body of an answered GET was cut (reset, or fewer bytes than Content-Length):
                # botocore's retries are over by then. Reads are idempotent: ask again, within the
                # same attempt budget and with botocore's standard backoff.
                if attempt >= self.max_attempts:
                    raise self.translate(exc, field, uri, missing) from None
                time.sleep(random.random() * min(_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS))
                attempt += 1
            except (ClientError, BotoCoreError, ConnectionError, TimeoutError) as exc:
                raise self.translate(exc, field, uri, missing) from None

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    # -- reads --------------------------------------------------------------------------------
    def get_range(self, uri: str, field: str, start: int, end: int | None = None) -> tuple[bytes, int]:
        """Bytes [start, end] (inclusive; None = to the end) and the object's total size."""
        bucket, key = parse_uri(uri)
        rng = f"bytes={start}-" + ("" if end is None else str(end))

        def go() -> tuple[bytes, int]:
            resp = self.client.get_object(Bucket=bucket, Key=key, Range=rng)
            data = resp["Body"].read()
            total = int(str(resp.get("ContentRange", "")).rpartition("/")[2] or resp["ContentLength"])
            return data, total

        data, total = self._call(field, uri, go)
        self._count(len(data))
        return data, total

    def get_bytes(self, uri: str, field: str) -> bytes:
        bucket, key = parse_uri(uri)
        data = self._call(field, uri, lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        self._count(len(data))
        return data

    def download(self, uri: str, path: str, field: str) -> int:
        """Stream one object to a file (1 MiB chunks); returns its size."""
        bucket, key = parse_uri(uri)

        def go() -> int:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            n = 0
            with open(path, "wb") as fh:
                for chunk in body.iter_chunks(1 << 20):
                    fh.write(chunk)
                    n += len(chunk)
            return n

        n = self._call(field, uri, go)
        self._count(n)
        return n

    def open(self, uri: str, field: str) -> "RangedReader":
        return RangedReader(self, uri, field)

    def iter_lines(self, uri: str, field: str) -> Iterator[str]:
        """Lines of a text object, fetched incrementally: stop iterating and nothing more is read."""
        reader = io.TextIOWrapper(io.BufferedReader(self.open(uri, field), buffer_size=16 << 10), encoding="utf-8",
                                  newline=None)
        try:
            yield from reader
        except UnicodeDecodeError as exc:
            raise BadInput("BadListFile", f"{field} {uri}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    def iter_objects(self, uri: str, field: str, page_size: int = 1000) -> Iterator[str]:
        """URIs of the objects under prefix `uri`, in key order, `page_size` keys a ListObjectsV2
        request: stop iterating and no further page is requested."""
        bucket, prefix = parse_uri(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"      # s3://b/train must not take in s3://b/train2/
        token: str | None = None
        while True:
            keys, token = self._call(field, uri, lambda t=token: self.list_page(bucket, prefix, page_size, t),
                                     missing="NoSuchBucket")
            for key in keys:
                yield f"s3://{bucket}/{key}"
            if token is None:
                return

    def list_page(self, bucket: str, prefix: str, max_keys: int, token: str | None) -> tuple[list[str], str | None]:
        """One ListObjectsV2 page: its keys and the token of the next page (None after the last)."""
        resp = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys,
                                           **({"ContinuationToken": token} if token else {}))
        return [o["Key"] for o in resp.get("Contents", [])], resp.get("NextContinuationToken") if resp.get("IsTruncated") else None

    def fetch_many(self, items: Iterable[tuple[str, Any]], field: str) -> Iterator[tuple[Any, bytes]]:
        """Fetch (uri, tag) items in parallel; yield (tag, bytes) in input order, at most
        2*workers objects in memory at once."""
        window = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="s3get") as pool:
            pending: deque = deque()
            it = iter(items)
            for uri, tag in it:
                pending.append((tag, pool.submit(self.get_bytes, uri, field)))
                if len(pending) >= window:
                    break
            while pending:
                tag, fut = pending.popleft()
                try:
                    data = fut.result()
                except BaseException:
                    for _, f in pending:
                        f.cancel()
                    raise
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[1], pool.submit(self.get_bytes, nxt[0], field)))
                yield tag, data

    def size_of(self, uri: str, field: str) -> int:
        """Object size. A 1-byte ranged GET rather than HEAD: HEAD errors carry no code, so a
        missing bucket, a missing key, a bad key id and a bad secret would all read "404"/"403"."""
        try:
            return self.get_range(uri, field, 0, 0)[1]
        except BadInput as exc:
            if exc.reason == "InvalidRange":   # an empty object
                return 0
            raise

    # -- writes -------------------------------------------------------------------------------
    def upload(self, path: str, uri: str, field: str, content_type: str | None = None) -> None:
        """Upload a file; multipart (8 MiB parts, parallel) above 8 MiB."""
        from boto3.s3.transfer import TransferConfig

        bucket, key = parse_uri(uri)
        cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=self.workers)
        extra = {"ContentType": content_type} if content_type else None
        from boto3.exceptions import S3UploadFailedError

        try:
            self._call(field, uri, lambda: self.client.upload_file(path, bucket, key, ExtraArgs=extra, Config=cfg))
        except S3UploadFailedError as exc:  # boto3 wraps the ClientError text; recover the code
            text = str(exc)
            code = next((c for c in list(_BAD_CODES) + sorted(_TRANSIENT_CODES) if c in text), None)
            if code in _BAD_CODES:
                raise BadInput(code, f"{field} {uri}: {code} — {_BAD_CODES[code]}") from None
            raise Transient(STORAGE_UNAVAILABLE if code else "UploadFailed",
                            f"{field} {uri}: upload failed ({code or 'unknown'}) at {self._where()} after "
                            f"{self.max_attempts} attempts; {RETRIED}") from None

    def delete(self, uri: str, field: str) -> None:
        bucket, key = parse_uri(uri)
        self._call(field, uri, lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def check_writable_bucket(self, uri: str, field: str) -> None:
        """Fail early (before hours of work) if the output bucket is missing or forbidden."""
        bucket, _ = parse_uri(uri)
        self._call(field, uri, lambda: self.client.head_bucket(Bucket=bucket), missing="NoSuchBucket")


class RangedReader(io.RawIOBase):
    """A seekable, read-only view of one S3 object built on Range GETs. Sequential reads double the
    request size (16 KiB up to 1 MiB), so over-read is bounded by one request."""

    MIN_BLOCK = 16 << 10
    MAX_BLOCK = 1 << 20

    def __init__(self, storage: Storage, uri: str, field: str):
        super().__init__()
        self.storage, self.uri, self.field = storage, uri, field
        self.pos = 0
        self.size: int | None = None
        self._buf = b""
        self._buf_start = 0
        self._block = self.MIN_BLOCK

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _ensure_size(self) -> int:
        if self.size is None:
            self.size = self.storage.size_of(self.uri, self.field)
        return self.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = self._ensure_size() + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _fetch(self, start: int, length: int) -> None:
        data, total = self.storage.get_range(self.uri, self.field, start, start + length - 1)
        self.size = total
        sequential = start == self._buf_start + len(self._buf)
        self._block = min(self.MAX_BLOCK, self._block * 2) if sequential else self.MIN_BLOCK
        self._buf, self._buf_start = data, start

    def readinto(self, b) -> int:
        want = len(b)
        if want == 0:
            return 0
        if self.size is not None and self.pos >= self.size:
            return 0
        off = self.pos - self._buf_start
        if not (0 <= off < len(self._buf)):
            if self.size is None and self.pos == 0:
                self._fetch(0, max(want, self.MIN_BLOCK))   # learns the size from Content-Range
            else:
                if self.pos >= self._ensure_size():
                    return 0
                self._fetch(self.pos, max(want, self._block))
            off = self.pos - self._buf_start
            if not (0 <= off < len(self._buf)):
                return 0
        n = min(want, len(self._buf) - off)
        b[:n] = self._buf[off:off + n]
        self.pos += n
        return n


# -- remote .npz ---------------------------------------------------------------------------------
def open_npz(storage: Storage, uri: str, field: str) -> zipfile.ZipFile:
    """The zip directory of a remote .npz, read through a RangedReader (its tail, not the whole object)."""
    try:
        return zipfile.ZipFile(storage.open(uri, field))
    except zipfile.BadZipFile:
        raise BadInput("BadNpz", f"{field} {uri}: not an .npz file (zip); save it with np.savez") from None


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


class NpzMember:
    """Reads the first rows of one .npy member of a remote .npz (a zip of .npy files): a stored
    member by exact Range GETs of its rows, a deflated one by streaming through the RangedReader."""

    def __init__(self, storage: Storage, uri: str, field: str, zf: zipfile.ZipFile, name: str, need: str = ""):
        self.storage, self.uri, self.field, self.zf = storage, uri, field, zf
        try:
            self.info = zf.getinfo(name)
        except KeyError:
            raise BadInput("BadNpz", f"{field} {uri}: has no '{name.removesuffix('.npy')}' array (found: "
                                     f"{', '.join(n.removesuffix('.npy') for n in zf.namelist())}){need}") from None
        self.name = name
        if self.info.compress_type == zipfile.ZIP_STORED:
            head, _ = storage.get_range(uri, field, self.info.header_offset,
                                        self.info.header_offset + _LOCAL_HEADER.size + 1024)
            fh = _LOCAL_HEADER.unpack(head[:_LOCAL_HEADER.size])
            self.data_start = self.info.header_offset + _LOCAL_HEADER.size + fh[10] + fh[11]
            rel = self.data_start - self.info.header_offset
            stream = io.BytesIO(head[rel:])
            self._parse_header(stream)
            if self.header_len > len(head) - rel:
                raise BadInput("BadNpz", f"{field} {uri}: '{name}' has an oversized .npy header")
            self.stream = None
        else:
            self.stream = zf.open(name)
            self._parse_header(self.stream)

    def _parse_header(self, stream) -> None:
        from numpy.lib import format as npf

        try:
            version = npf.read_magic(stream)
            # np.savez writes 1.0, or 2.0 for a header over 64 KiB; 3.0 (utf-8 field names) holds
            # only structured dtypes, which are refused below anyway.
            read_header = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            shape, fortran, dtype = read_header(stream)
        except Exception as exc:
            raise BadInput("BadNpz", f"{self.field} {self.uri}: '{self.name}' is not a valid .npy array ({exc})") from None
        if fortran and len(shape) > 1:
            raise BadInput("BadNpz", f"{self.field} {self.uri}: '{self.name}' is Fortran-ordered; save it C-ordered "
                                     "(np.ascontiguousarray) so samples can be read without the whole array")
        if dtype.hasobject:
            raise BadInput("BadNpz", f"{self.field} {self.uri}: '{self.name}' holds Python objects; use a numeric dtype")
        self.shape, self.dtype = tuple(shape), dtype
        self.header_len = stream.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if shape else 0

    def rows(self, n: int, chunk_rows: int = 256) -> Iterator[np.ndarray]:
        """The first n rows, `chunk_rows` at a time."""
        step = max(1, min(chunk_rows, (4 << 20) // max(1, self.row_bytes)))
        done = 0
        while done < n:
            k = min(step, n - done)
            want = k * self.row_bytes
            if self.stream is None:
                start = self.data_start + self.header_len + done * self.row_bytes
                data, _ = self.storage.get_range(self.uri, self.field, start, start + want - 1)
            else:
                data = self.stream.read(want)
            if len(data) != want:
                raise BadInput("BadNpz", f"{self.field} {self.uri}: '{self.name}' is truncated")
            yield np.frombuffer(data, self.dtype).reshape(k, *self.shape[1:])
            done += k
