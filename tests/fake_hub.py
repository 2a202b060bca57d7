"""A loopback fake of the Hugging Face Hub, just large enough for this package's tests.

`FakeHub` is a threaded stdlib HTTP server bound to 127.0.0.1 on a free port. It keeps model and
dataset repos as a list of commits (each commit a full snapshot: path -> blob) with the blobs in
a temporary folder, and answers the requests that huggingface_hub 2.x, transformers, peft and
datasets make for:

    create_repo                       POST /api/repos/create              (records `private`)
    model_info / dataset_info         GET  /api/{models,datasets}/{repo}[/revision/{rev}]
    upload_folder / create_commit     POST /api/validate-yaml
                                      POST /api/{type}s/{repo}/preupload/{rev}   regular or lfs per file
                                      POST /{prefix}{repo}.git/info/lfs/objects/batch   "basic" transfer only
                                      PUT  /__lfs/{oid}, POST /__lfs/verify       the LFS object store
                                      POST /api/{type}s/{repo}/commit/{rev}      ndjson commit
    list_repo_tree / get_paths_info   GET  /api/{type}s/{repo}/tree/{rev}[/{path}]
    (HfFileSystem, datasets)          POST /api/{type}s/{repo}/paths-info/{rev}
    hf_hub_download / snapshot_download / HfFileSystem reads
                                      HEAD, GET /{prefix}{repo}/resolve/{rev}/{path}   (Range supported)
    whoami                            GET  /api/whoami-v2

Upload is only ever offered the LFS "basic" transfer: the server never advertises Xet (no
`X-Xet-*` headers). huggingface_hub 2.x decides to use Xet on the client side whenever `hf_xet`
is installed, so clients must also set `HF_HUB_DISABLE_XET=1` (see `client_env`).

Files are served straight from /resolve (no CDN redirect). Revisions are "main" or a commit
oid: no other branches, tags or pull requests. Handlers run one at a time under `FakeHub.lock`.

Like the real Hub, writes need the token (`Authorization: Bearer <token>`), and a private repo
is invisible (404 RepoNotFound) without it. Requests the fake does not implement get a 501 and
are listed in `FakeHub.unhandled`, so a test can assert that nothing was missed.

    with FakeHub() as hub:                  # or hub.start() / hub.stop()
        env = hub.client_env()              # HF_ENDPOINT etc. for a subprocess

A client process calls `guard_network()` first: from then on it can neither resolve nor connect
to anything but the loopback address, so a mistake cannot reach huggingface.co.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
DEFAULT_TOKEN = "hf_fake_token_for_tests"
USER = "fake-user"
# Files stored as LFS whatever their content (a subset of the Hub's default .gitattributes).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".parquet", ".arrow", ".npy", ".npz", ".zip", ".gz")
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset"}
URL_PREFIX = {"model": "", "dataset": "datasets/"}


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    """A stored file. `oid` is its git object id: of the content, or of the pointer file for LFS."""

    sha256: str
    size: int
    lfs: bool
    oid: str

    @classmethod
    def of(cls, content: bytes, lfs: bool) -> "Blob":
        sha256 = hashlib.sha256(content).hexdigest()
        return cls.lfs_object(sha256, len(content)) if lfs else cls(sha256, len(content), False, git_blob_oid(content))

    @classmethod
    def lfs_object(cls, sha256: str, size: int) -> "Blob":
        return cls(sha256, size, True, git_blob_oid(lfs_pointer(sha256, size)))


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in reversed(self.commits) if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class FakeHub:
    """The server and its state. `url` is `http://127.0.0.1:<port>`; `repos` maps (type, id) -> Repo."""

    def __init__(self, token: str = DEFAULT_TOKEN):
        self.token = token
        self.root = tempfile.mkdtemp(prefix="behrt_hf_fake_hub_")
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((HOST, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client_env(self, base: dict | None = None) -> dict:
        """Environment for a client subprocess: this endpoint only, online, no Xet, the fake token."""
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env[key] = "0"
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_XET="1",
            HF_TOKEN=self.token,
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY=HOST,
            no_proxy=HOST,
        )
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(key, None)
        return env

    # ---- state -----------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str) -> Repo:
        return self.repos[(repo_type, repo_id)]

    def read(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self._read_blob(self.repo(repo_type, repo_id).at(revision).files[path])

    def _blob_path(self, sha256: str) -> str:
        return os.path.join(self.root, "blobs", sha256)

    def _store(self, content: bytes, lfs: bool) -> Blob:
        blob = Blob.of(content, lfs)
        path = self._blob_path(blob.sha256)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        return blob

    def _read_blob(self, blob: Blob) -> bytes:
        with open(self._blob_path(blob.sha256), "rb") as f:
            return f.read()

    def _new_commit(self, repo: Repo, files: dict[str, Blob], message: str) -> Commit:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        seed = f"{repo.repo_type}/{repo.repo_id}/{len(repo.commits)}/{message}/{now}".encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), message, files, now)
        repo.commits.append(commit)
        return commit


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def guard_network() -> None:
    """In this process, refuse DNS look-ups and connections to anything but the loopback address.

    Also checks that huggingface_hub, if imported already, points at a loopback endpoint.
    """
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(host) -> None:
        if isinstance(host, str) and host not in LOOPBACK:
            raise ConnectionRefusedError(f"network guard: {host!r} is not the loopback fake Hub")

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        check(host.decode() if isinstance(host, bytes) else host)
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
    endpoint = os.environ.get("HF_ENDPOINT", "")
    if not endpoint.startswith(f"http://{HOST}:"):
        raise RuntimeError(f"network guard: HF_ENDPOINT={endpoint!r} is not the loopback fake Hub")


# ---- request handling ----------------------------------------------------------------------

_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_REV = r"(?P<rev>[^/]+)"
_API = rf"/api/(?P<type>models|datasets)/{_REPO}"  # /api/models/ns/name, /api/datasets/ns/name
_GIT = rf"/(?P<prefix>datasets/)?{_REPO}"  # /ns/name, /datasets/ns/name
# (methods, path pattern, handler method `_<name>`)
ROUTES = [(methods, re.compile(f"^{pattern}$"), name) for methods, pattern, name in [
    ({"GET"}, r"/api/whoami-v2", "whoami"),
    ({"POST"}, r"/api/repos/create", "create_repo"),
    ({"POST"}, r"/api/validate-yaml", "validate_yaml"),
    ({"GET"}, rf"{_API}(?:/revision/{_REV})?", "repo_info"),
    ({"GET"}, rf"{_API}/tree/{_REV}(?:/(?P<path>.*))?", "tree"),
    ({"POST"}, rf"{_API}/paths-info/{_REV}", "paths_info"),
    ({"POST"}, rf"{_API}/preupload/{_REV}", "preupload"),
    ({"POST"}, rf"{_API}/commit/{_REV}", "create_commit"),
    ({"POST"}, rf"{_GIT}\.git/info/lfs/objects/batch", "lfs_batch"),
    ({"PUT"}, r"/__lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ({"POST"}, r"/__lfs/verify", "lfs_verify"),
    ({"GET", "HEAD"}, rf"{_GIT}/resolve/{_REV}/(?P<path>.+)", "resolve"),
]]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the subclass made by FakeHub.start
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the tests read `hub.requests` instead
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # ---- plumbing --------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        body = self._read_body()
        with self.hub.lock:
            self.hub.requests.append((method, self.path))
        for methods, pattern, name in ROUTES:
            match = pattern.match(split.path)
            if method in methods and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if "repo" in params:  # /api/{models,datasets}/... or /[datasets/]...
                    kind = params.pop("type", None) or ("datasets" if params.pop("prefix", None) else "models")
                    params["repo_type"] = REPO_TYPES[kind]
                try:
                    with self.hub.lock:
                        getattr(self, f"_{name}")(body=body, **params)
                except HubError as e:
                    self._error(e)
                return
        with self.hub.lock:
            self.hub.unhandled.append((method, self.path))
        self._error(HubError(501, None, f"fake hub: {method} {split.path} is not implemented"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_length: int | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._json({"error": error.message}, error.status, headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _require_token(self) -> None:
        if not self._authorized():
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        if write:
            self._require_token()
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def _at(repo: Repo, rev: str) -> Commit:
        commit = repo.at(rev)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    # ---- endpoints -------------------------------------------------------------------------
    def _whoami(self, body):
        self._require_token()
        self._json({"type": "user", "name": USER, "fullname": "Fake User", "orgs": []})

    def _create_repo(self, body):
        self._require_token()
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, None, f"fake hub: repo type {repo_type!r} is not supported")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            raise HubError(409, None, "You already created this repo", {"X-Repo-Url": url})
        # The Hub's default visibility is public; huggingface_hub sends "visibility" when private is given.
        repo = Repo(repo_type, repo_id, private=payload.get("visibility", "public") == "private")
        attributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        gitattributes = self.hub._store(attributes.encode(), lfs=False)
        self.hub._new_commit(repo, {".gitattributes": gitattributes}, "initial commit")
        self.hub.repos[(repo_type, repo_id)] = repo
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, body):
        self._json({"errors": [], "warnings": []})

    def _repo_info(self, body, repo_type, repo, rev="main"):
        r = self._repo(repo_type, repo)
        commit = self._at(r, rev)
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling = {"rfilename": path, "size": blob.size, "blobId": blob.oid}
            if blob.lfs:
                sibling["lfs"] = {"sha256": blob.sha256, **self._lfs_info(blob)}
            siblings.append(sibling)
        self._json({
            "id": r.repo_id, "_id": r.repo_id, "author": r.repo_id.split("/")[0], "sha": commit.oid,
            "private": r.private, "gated": False, "disabled": False, "lastModified": commit.date,
            "createdAt": r.commits[0].date, "tags": [], "downloads": 0, "likes": 0, "siblings": siblings,
        })

    @staticmethod
    def _lfs_info(blob: Blob) -> dict:
        return {"size": blob.size, "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}

    def _file_entry(self, path: str, blob: Blob) -> dict:
        entry = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, **self._lfs_info(blob)}
        return entry

    @staticmethod
    def _folder_entry(path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def _entries(self, commit: Commit, folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        files, folders = [], set()
        for path, blob in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            if len(parts) == 1 or recursive:
                files.append(self._file_entry(path, blob))
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
        return [self._folder_entry(p) for p in sorted(folders)] + files

    def _tree(self, body, repo_type, repo, rev, path=""):
        commit = self._at(self._repo(repo_type, repo), rev)
        path = path.strip("/")
        if path and not any(p.startswith(path + "/") for p in commit.files):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.oid})
        self._json(self._entries(commit, path, recursive=self._flag("recursive")))

    def _paths_info(self, body, repo_type, repo, rev):
        commit = self._at(self._repo(repo_type, repo), rev)
        form = parse_qs(body.decode())
        paths = form.get("paths", [])
        if not paths and body.startswith(b"{"):
            paths = json.loads(body).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._file_entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files) or path == "":
                out.append(self._folder_entry(path))
        self._json(out)

    def _preupload(self, body, repo_type, repo, rev):
        commit = self._at(self._repo(repo_type, repo, write=True), rev)
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = commit.files.get(f["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, body, repo_type, repo):
        self._repo(repo_type, repo, write=True)
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, None, "fake hub: only 'upload' with the 'basic' transfer is supported")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/__lfs/{obj['oid']}", "expires_at": "2999-01-01T00:00:00Z"},
                    "verify": {"href": f"{self.hub.url}/__lfs/verify"},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, body, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, None, "fake hub: LFS object content does not match its oid")
        self.hub._store(body, lfs=True)
        self.hub.lfs_objects.add(oid)
        self._send(200, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, body):
        payload = json.loads(body)
        if payload["oid"] not in self.hub.lfs_objects:
            raise HubError(404, None, f"fake hub: LFS object {payload['oid']} was never uploaded")
        self._json({"success": True})

    def _create_commit(self, body, repo_type, repo, rev):
        r = self._repo(repo_type, repo, write=True)
        parent = self._at(r, rev)
        files = dict(parent.files)
        header = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                content = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[value["path"]] = self.hub._store(content, lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    raise HubError(400, None, f"fake hub: the LFS object of {value['path']} was not uploaded")
                files[value["path"]] = Blob.lfs_object(value["oid"], value["size"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, None, f"fake hub: commit operation {key!r} is not supported")
        if header.get("parentCommit") and header["parentCommit"] != r.head.oid:
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        commit = self.hub._new_commit(r, files, header.get("summary", ""))
        self._json({"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                    "commitUrl": f"{self.hub.url}/{URL_PREFIX[r.repo_type]}{r.repo_id}/commit/{commit.oid}"})

    def _resolve(self, body, repo_type, repo, rev, path):
        r = self._repo(repo_type, repo)
        commit = self._at(r, rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.oid})
        etag = f'"{blob.sha256 if blob.lfs else blob.oid}"'
        headers = {"X-Repo-Commit": commit.oid, "ETag": etag, "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(blob.size)})
        content = self.hub._read_blob(blob) if self.command == "GET" else b""
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged and self.command == "GET":
            start = int(ranged[1]) if ranged[1] else max(blob.size - int(ranged[2]), 0)
            end = int(ranged[2]) if ranged[1] and ranged[2] else blob.size - 1
            end = min(end, blob.size - 1)
            if start >= blob.size:
                raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{blob.size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
            self._send(206, content[start:end + 1], headers, content_type="application/octet-stream")
            return
        self._send(200, content, headers, content_length=blob.size, content_type="application/octet-stream")
