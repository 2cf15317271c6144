"""Google Cloud Storage, emulated on 127.0.0.1: a flat object store behind GCS's JSON API.

GCS has no directories: a bucket holds objects whose names may contain "/", and
listing by prefix is the only hierarchy. Clients that offer directories make
them up, and TensorFlow's GCS filesystem records each directory it creates as
a zero-byte object named ``<dir>/`` (``CreateDir`` in tsl's
platform/cloud/gcs_file_system.cc). Those marker objects are what KFP's launcher
turns into files (kubeflow/pipelines#13476), so the store here keeps every
object name exactly as written, ``a/`` and ``a/b`` side by side.

The server answers the JSON API calls the real clients make, the subset they use
(cloud.google.com/storage/docs/json_api/v1):

- TensorFlow's own GCS filesystem (tsl platform/cloud/gcs_file_system.cc, the one
  TFX's executors write gs:// through), reached as an HTTPS proxy (``GcsEmulator``);
- Beam's gcsio and TFX's fileio on google-cloud-storage (``STORAGE_EMULATOR_HOST``),
  including the batch endpoint Beam uses to copy and delete.

``environment()`` gives the variables that point both at this server. Not
emulated: authentication, ACLs, object versioning, composite objects, retention.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c

Json = dict
API_HOST, MEDIA_HOST = "www.googleapis.com", "storage.googleapis.com"


class ObjectStore:
    """Flat object names per bucket, kept on disk (one file per object, name URL-quoted)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._generations = itertools.count(int(time.time() * 1e6))

    def _path(self, bucket: str, name: str) -> Path:
        return self.root / bucket / quote(name, safe="")

    def create_bucket(self, bucket: str) -> None:
        (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def has_bucket(self, bucket: str) -> bool:
        return (self.root / bucket).is_dir()

    def put(self, bucket: str, name: str, data: bytes) -> None:
        path = self._path(bucket, name)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        with self._lock:
            tmp.replace(path)  # readers see the old object or the new one, never half

    def get(self, bucket: str, name: str) -> bytes | None:
        try:
            return self._path(bucket, name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def exists(self, bucket: str, name: str) -> bool:
        return self._path(bucket, name).is_file()

    def delete(self, bucket: str, name: str) -> bool:
        try:
            self._path(bucket, name).unlink()
            return True
        except FileNotFoundError:
            return False

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name under ``prefix``, in GCS's (lexicographic) order."""
        folder = self.root / bucket
        if not folder.is_dir():
            return []
        found = (unquote(p.name) for p in folder.iterdir() if not p.name.startswith(".tmp-"))
        return sorted(n for n in found if n.startswith(prefix))

    def metadata(self, bucket: str, name: str) -> Json | None:
        data = self.get(bucket, name)
        if data is None:
            return None
        stat = self._path(bucket, name).stat()
        updated = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stat.st_mtime)) + ".000Z"
        crc = google_crc32c.Checksum(data).digest()
        return {
            "kind": "storage#object", "bucket": bucket, "name": name,
            "id": f"{bucket}/{name}/{stat.st_mtime_ns}",
            "generation": str(stat.st_mtime_ns), "metageneration": "1",
            "size": str(len(data)), "contentType": "application/octet-stream",
            "storageClass": "STANDARD", "timeCreated": updated, "updated": updated,
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "crc32c": base64.b64encode(crc).decode(),
            "selfLink": f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
        }


def _error(code: int, message: str) -> tuple[int, dict, bytes]:
    reason = {400: "invalid", 404: "notFound", 412: "conditionNotMet"}.get(code, "backendError")
    body = {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}
    return code, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _json(code: int, doc: Json) -> tuple[int, dict, bytes]:
    return code, {"Content-Type": "application/json"}, json.dumps(doc).encode()


_OBJECT = re.compile(r"^/(?:download/|upload/)?storage/v1/b/([^/]+)/o/(.+)$")
_COPY = re.compile(r"^/storage/v1/b/([^/]+)/o/(.+)/(copyTo|rewriteTo)/b/([^/]+)/o/(.+)$")
_LIST = re.compile(r"^/(?:upload/)?storage/v1/b/([^/]+)/o/?$")
_BUCKET = re.compile(r"^/storage/v1/b/([^/]+)/?$")


class GcsApi:
    """The protocol: (method, path, query, headers, body) -> (status, headers, body)."""

    def __init__(self, store: ObjectStore, base_url: str):
        self.store, self.base_url = store, base_url
        self.uploads: dict[str, dict] = {}  # resumable upload id -> {bucket, name, data}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request

    # --------------------------------------------------------------- dispatch

    def handle(self, method: str, target: str, headers, body: bytes):
        url = urlsplit(target)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append((method, path))
        host = (headers.get("Host") or "").split(":")[0]
        if host == MEDIA_HOST and method == "GET":  # TF's reads: https://storage.googleapis.com/B/O
            bucket, _, name = path.lstrip("/").partition("/")
            return self._get(unquote(bucket), unquote(name), {"alt": "media"}, headers)
        if method == "POST" and path == "/batch/storage/v1":
            return self._batch(headers, body)
        if path.startswith("/upload/") and method in ("POST", "PUT"):
            return self._upload(method, path, query, headers, body)
        match = _COPY.match(path)
        if match and method == "POST":
            return self._copy(*match.groups(), query)
        match = _LIST.match(path)
        if match and method == "GET":
            return self._list(unquote(match.group(1)), query)
        match = _OBJECT.match(path)
        if match:
            bucket, name = unquote(match.group(1)), unquote(match.group(2))
            if not self.store.has_bucket(bucket):
                return _error(404, f"The specified bucket does not exist: {bucket}")
            if method == "GET":
                return self._get(bucket, name, query, headers)
            if method == "DELETE":
                if not self.store.delete(bucket, name):
                    return _error(404, f"No such object: {bucket}/{name}")
                return 204, {}, b""
        match = _BUCKET.match(path)
        if match and method == "GET":
            bucket = unquote(match.group(1))
            if not self.store.has_bucket(bucket):
                return _error(404, f"The specified bucket does not exist: {bucket}")
            return _json(200, {"kind": "storage#bucket", "name": bucket, "id": bucket,
                               "location": "US", "storageClass": "STANDARD",
                               "metageneration": "1"})
        return _error(400, f"the GCS emulator does not answer {method} {path}")

    # --------------------------------------------------------------- objects

    def _get(self, bucket, name, query, headers):
        meta = self.store.metadata(bucket, name)
        if meta is None:
            return _error(404, f"No such object: {bucket}/{name}")
        if query.get("alt") != "media":
            return _json(200, meta)
        data = self.store.get(bucket, name) or b""
        hashes = f"crc32c={meta['crc32c']},md5={meta['md5Hash']}"
        out = {"Content-Type": "application/octet-stream", "x-goog-hash": hashes,
               "x-goog-generation": meta["generation"], "x-goog-metageneration": "1",
               "x-goog-stored-content-length": str(len(data)),
               "x-goog-stored-content-encoding": "identity"}
        wanted = re.match(r"bytes=(\d+)-(\d*)$", headers.get("Range", "") or "")
        if wanted:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data) and len(data) > 0:
                return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, out, data[start:end + 1]
        return 200, out, data

    def _list(self, bucket, query):
        if not self.store.has_bucket(bucket):
            return _error(404, f"The specified bucket does not exist: {bucket}")
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        items, prefixes = [], []
        for name in self.store.names(bucket, prefix):
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest[:rest.index(delimiter) + len(delimiter)]
                if not prefixes or prefixes[-1] != folder:
                    prefixes.append(folder)
                continue
            meta = self.store.metadata(bucket, name)
            if meta is not None:
                items.append(meta)
        doc = {"kind": "storage#objects"}
        if items:
            doc["items"] = items
        if prefixes:
            doc["prefixes"] = prefixes
        return _json(200, doc)

    def _precondition(self, bucket, name, query):
        if query.get("ifGenerationMatch") == "0" and self.store.exists(bucket, name):
            return _error(412, "At least one of the pre-conditions you specified did not hold.")
        return None

    def _finish_upload(self, bucket, name, data, query):
        failed = self._precondition(bucket, name, query)
        if failed:
            return failed
        self.store.put(bucket, name, data)
        return _json(200, self.store.metadata(bucket, name))

    def _upload(self, method, path, query, headers, body):
        match = _LIST.match(path)
        if not match:
            return _error(400, f"bad upload path {path}")
        bucket = unquote(match.group(1))
        if not self.store.has_bucket(bucket):
            return _error(404, f"The specified bucket does not exist: {bucket}")
        kind = query.get("uploadType", "")
        if kind == "media":
            return self._finish_upload(bucket, query.get("name", ""), body, query)
        if kind == "multipart":
            metadata, data = self._multipart_related(headers, body)
            return self._finish_upload(bucket, metadata.get("name") or query.get("name", ""),
                                       data, query)
        if kind == "resumable" and method == "POST" and "upload_id" not in query:
            metadata = json.loads(body or b"{}")
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = {"bucket": bucket, "query": query, "data": bytearray(),
                                       "name": metadata.get("name") or query.get("name", "")}
            via_proxy = (headers.get("Host") or "").split(":")[0] == API_HOST
            base = f"https://{API_HOST}" if via_proxy else self.base_url
            location = (f"{base}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
                        f"?uploadType=resumable&upload_id={upload_id}")
            return 200, {"Location": location, "Content-Length": "0"}, b""
        if kind == "resumable" and "upload_id" in query:
            upload = self.uploads.get(query["upload_id"])
            if upload is None:
                return _error(404, "no such upload session")
            if method == "DELETE":
                del self.uploads[query["upload_id"]]
                return 499, {}, b""
            content_range = headers.get("Content-Range", "") or ""
            match = re.match(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)$", content_range.strip())
            if content_range and not match:
                return _error(400, f"bad Content-Range {content_range!r}")
            if match and match.group(2) is not None:
                start = int(match.group(2))
                del upload["data"][start:]
                upload["data"] += body
            elif not match:
                upload["data"] += body
            total = match.group(4) if match else str(len(upload["data"]))
            if total != "*" and int(total) == len(upload["data"]):
                del self.uploads[query["upload_id"]]
                return self._finish_upload(upload["bucket"], upload["name"],
                                           bytes(upload["data"]), upload["query"])
            out = {"Content-Length": "0"}
            if upload["data"]:
                out["Range"] = f"bytes=0-{len(upload['data']) - 1}"
            return 308, out, b""
        return _error(400, f"uploadType {kind!r} is not emulated")

    @staticmethod
    def _multipart_related(headers, body) -> tuple[Json, bytes]:
        content_type = headers.get("Content-Type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        parts = list(message.iter_parts())
        metadata = json.loads(parts[0].get_payload(decode=True) or b"{}")
        return metadata, parts[1].get_payload(decode=True) or b""

    def _copy(self, src_bucket, src_name, verb, dst_bucket, dst_name, query):
        src_bucket, src_name = unquote(src_bucket), unquote(src_name)
        dst_bucket, dst_name = unquote(dst_bucket), unquote(dst_name)
        data = self.store.get(src_bucket, src_name)
        if data is None:
            return _error(404, f"No such object: {src_bucket}/{src_name}")
        if not self.store.has_bucket(dst_bucket):
            return _error(404, f"The specified bucket does not exist: {dst_bucket}")
        failed = self._precondition(dst_bucket, dst_name, query)
        if failed:
            return failed
        self.store.put(dst_bucket, dst_name, data)
        meta = self.store.metadata(dst_bucket, dst_name)
        if verb == "copyTo":
            return _json(200, meta)
        return _json(200, {"kind": "storage#rewriteResponse", "done": True,
                           "totalBytesRewritten": str(len(data)), "objectSize": str(len(data)),
                           "resource": meta})

    # --------------------------------------------------------------- batch

    def _batch(self, headers, body):
        """POST /batch/storage/v1: multipart/mixed of application/http requests, answered alike."""
        content_type = headers.get("Content-Type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        boundary = f"batch_{uuid.uuid4().hex}"
        out = []
        for part in message.iter_parts():
            raw = part.get_payload(decode=True) or b""
            head, _, sub_body = raw.partition(b"\r\n\r\n")
            if not _:
                head, _, sub_body = raw.partition(b"\n\n")
            lines = head.decode().splitlines()
            method, target = lines[0].split(" ")[:2]
            sub_headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            status, resp_headers, resp_body = self.handle(
                method, urlsplit(target)._replace(scheme="", netloc="").geturl(),
                _Headers(sub_headers), sub_body)
            reason = {200: "OK", 204: "No Content", 404: "Not Found"}.get(status, "Status")
            header_text = "".join(f"{k}: {v}\r\n" for k, v in resp_headers.items())
            content_id = part.get("Content-ID", "")
            out.append(f"--{boundary}\r\nContent-Type: application/http\r\n"
                       f"Content-ID: response-{content_id.strip('<>')}\r\n\r\n"
                       f"HTTP/1.1 {status} {reason}\r\n{header_text}"
                       f"Content-Length: {len(resp_body)}\r\n\r\n".encode() + resp_body
                       + b"\r\n")
        payload = b"".join(out) + f"--{boundary}--\r\n".encode()
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, payload


class _Headers(dict):
    def get(self, key, default=None):
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


class GcsEmulator:
    """The JSON API on 127.0.0.1 over an ObjectStore; a context manager.

    One port serves two kinds of client:
    - plain HTTP, for google-cloud-storage (``STORAGE_EMULATOR_HOST``: Beam's gcsio);
    - an HTTPS proxy for TensorFlow's own GCS filesystem, which has no endpoint
      setting (it calls https://www.googleapis.com/storage/v1/ and reads from
      https://storage.googleapis.com/) but whose libcurl honours ``https_proxy``
      and ``CURL_CA_BUNDLE``: a ``CONNECT`` to one of those two hosts is answered
      here, behind TLS with a certificate of a CA made for this run. A CONNECT to
      any other host is refused: nothing leaves the machine.
    """

    def __init__(self, store: ObjectStore, work_dir: Path, buckets: tuple[str, ...] = ()):
        self.store = store
        for bucket in buckets:
            store.create_bucket(bucket)
        self.ca_file, tls = _make_tls(Path(work_dir))
        api_ref: list[GcsApi] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []  # libcurl streams TF's uploads chunked
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self):
                body = self._body()
                status, headers, payload = api_ref[0].handle(self.command, self.path,
                                                             self.headers, body)
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

            def do_CONNECT(self):
                host = self.path.rsplit(":", 1)[0]
                if host not in (API_HOST, MEDIA_HOST):
                    self.send_error(403, f"the GCS emulator proxies only {API_HOST} and "
                                         f"{MEDIA_HOST}, not {host}")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                try:
                    connection = tls.wrap_socket(self.connection, server_side=True)
                    Handler(connection, self.client_address, self.server)
                except (OSError, ssl.SSLError):
                    pass  # the client went away
                self.close_connection = True

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api = GcsApi(store, self.url)
        api_ref.append(self.api)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> GcsEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def environment(self) -> dict:
        """Variables that send TensorFlow's and google-cloud-storage's gs:// calls here."""
        return {
            "https_proxy": self.url, "HTTPS_PROXY": self.url,
            "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(self.ca_file),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulated",  # tsl's GoogleAuthProvider
            "STORAGE_EMULATOR_HOST": self.url,
            "GOOGLE_CLOUD_PROJECT": "cgd-emulated",
            "NO_GCE_CHECK": "true",
        }


def _make_tls(work_dir: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA for this run and a server certificate for the two GCS hosts, signed by it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    work_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    window = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(window[0]).not_valid_after(window[1]))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cgd GCS emulator CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                     [(x509.BasicConstraints(ca=True, path_length=0), True)])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, API_HOST)]), ca_name,
        key.public_key(), ca_key,
        [(x509.SubjectAlternativeName([x509.DNSName(API_HOST), x509.DNSName(MEDIA_HOST)]),
          False), (x509.BasicConstraints(ca=False, path_length=None), True)])
    ca_file, chain_file, key_file = (work_dir / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    return ca_file, context
