"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, enough for the real
``huggingface_hub`` client's ``create_repo`` + ``upload_folder`` (LFS, no Xet) and for
``datasets.load_dataset`` of the repository through it.

Endpoints (dataset repositories, branch ``main``): ``POST /api/repos/create`` (409 with
``url`` when it exists), ``POST /api/validate-yaml``, ``POST /api/datasets/{id}/preupload/main``,
``POST /datasets/{id}.git/info/lfs/objects/batch`` and ``PUT /_lfs/{oid}``,
``POST /api/datasets/{id}/commit/main`` (NDJSON), ``GET /api/datasets/{id}[/revision/{rev}]``,
``GET /api/datasets/{id}/tree/{rev}[/{path}]``,
``HEAD``/``GET /datasets/{id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and
``Range``. Writes need ``Authorization: Bearer {token}``. Faults for the tests:
``fail_commits`` (the next N commits answer 500) and ``hold_puts`` (an LFS PUT waits until
``release`` is set). Every request is logged in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

REPO = r"(?P<repo>[^/]+/[^/]+?)"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool

    def entry(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": path, "size": len(self.data)}
        out["oid"] = git_blob_oid(self.data)
        if self.lfs:
            out["lfs"] = {"oid": hashlib.sha256(self.data).hexdigest(), "size": len(self.data),
                          "pointerSize": 134}  # fmt: skip
        return out


@dataclass
class Repo:
    private: bool
    commits: list[str] = field(default_factory=lambda: ["0" * 40])
    files: dict[str, StoredFile] = field(default_factory=dict)


class HubState:
    """What the stand-in holds: repositories, LFS objects, faults and the request log."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # sha256 -> content, once a PUT completed
        self.requests: list[tuple[str, str]] = []
        self.fail_commits = 0
        self.range_reads = 0
        self.hold_puts = False
        self.put_started = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.base = ""


class Handler(BaseHTTPRequestHandler):
    server: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        return

    @property
    def hub(self) -> HubState:
        return self.server.state

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        self.query = parse_qs(url.query)
        self.hub.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        for pattern, name in ROUTES[method]:
            m = re.fullmatch(pattern, unquote(url.path))
            if m:
                if (
                    name in WRITES
                    and self.headers.get("Authorization") != f"Bearer {self.hub.token}"
                ):
                    self._json(401, {"error": "Invalid credentials in Authorization header"})
                    return
                getattr(self, name)(m.groupdict(), length)
                return
        self.rfile.read(length)
        self._json(404, {"error": f"stand-in: no route for {method} {url.path}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self, length: int) -> Any:
        return json.loads(self.rfile.read(length) or b"{}")

    def _repo(self, groups: dict[str, str]) -> Repo | None:
        repo = self.hub.repos.get(groups["repo"])
        if repo is None:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    # ---- writes ----------------------------------------------------------------------------

    def create_repo(self, _g: dict[str, str], length: int) -> None:
        body = self._body(length)
        repo_id = f"{body.get('organization')}/{body['name']}"
        url = f"{self.hub.base}/datasets/{repo_id}"
        if repo_id in self.hub.repos:
            self._json(409, {"error": "You already created this dataset repo", "url": url})
            return
        private = body.get("visibility") == "private" or bool(body.get("private"))  # 2.x, 0.x
        self.hub.repos[repo_id] = Repo(private=private)
        self._json(200, {"url": url, "name": repo_id})

    def validate_yaml(self, _g: dict[str, str], length: int) -> None:
        content = self._body(length).get("content", "")
        parts = content.split("---\n")
        try:
            meta = yaml.safe_load(parts[1]) if content.startswith("---\n") else None
        except yaml.YAMLError as e:
            self._json(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
            return
        if not isinstance(meta, dict) or "configs" not in meta:
            self._json(400, {"errors": [{"message": "no metadata with configs"}]})
            return
        self._json(200, {"errors": [], "warnings": []})

    def preupload(self, g: dict[str, str], length: int) -> None:
        repo = self._repo(g)
        if repo is None:
            return
        files = []
        for f in self._body(length)["files"]:
            lfs = f["path"].endswith((".parquet", ".tar")) or f["size"] > 10 * 2**20
            old = repo.files.get(f["path"])
            oid = None
            if old is not None and old.lfs == lfs:
                oid = hashlib.sha256(old.data).hexdigest() if lfs else git_blob_oid(old.data)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})  # fmt: skip
        self._json(200, {"files": files, "commitOid": repo.commits[-1]})

    def lfs_batch(self, g: dict[str, str], length: int) -> None:
        body = self._body(length)
        if self._repo(g) is None:
            return
        objects = []
        for o in body["objects"]:
            entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.hub.objects:
                href = f"{self.hub.base}/_lfs/{o['oid']}?size={o['size']}"
                entry["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects},
                   {"Content-Type": "application/vnd.git-lfs+json"})  # fmt: skip

    def lfs_put(self, g: dict[str, str], length: int) -> None:
        data = self.rfile.read(length)
        if self.hub.hold_puts:
            self.hub.put_started.set()
            self.hub.release.wait(60)
        if hashlib.sha256(data).hexdigest() != g["oid"]:
            self._json(400, {"error": "sha256 mismatch"})
            return
        self.hub.objects[g["oid"]] = data
        self._json(200, {})

    def commit(self, g: dict[str, str], length: int) -> None:
        raw = self.rfile.read(length)
        repo = self._repo(g)
        if repo is None:
            return
        if self.hub.fail_commits > 0:
            self.hub.fail_commits -= 1
            self._json(500, {"error": "Internal Error - We're working hard to fix this"})
            return
        files = dict(repo.files)
        for line in raw.splitlines():
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.objects:
                    self._json(422, {"error": f"LFS object {value['oid']} was not uploaded"})
                    return
                files[value["path"]] = StoredFile(self.hub.objects[value["oid"]], lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}  # fmt: skip
        with self.hub.lock:
            repo.files = files
            oid = hashlib.sha1(raw + repo.commits[-1].encode()).hexdigest()
            repo.commits.append(oid)
        url = f"{self.hub.base}/datasets/{g['repo']}/commit/{oid}"
        self._json(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    # ---- reads -----------------------------------------------------------------------------

    def info(self, g: dict[str, str], _length: int) -> None:
        repo = self._repo(g)
        if repo is None:
            return
        self._json(200, {"id": g["repo"], "sha": repo.commits[-1], "private": repo.private,
                         "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                         "tags": [], "downloads": 0, "likes": 0})  # fmt: skip

    def _entries(self, repo: Repo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = prefix.strip("/")
        out: dict[str, dict[str, Any]] = {}
        for path, f in sorted(repo.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if recursive or i == 1:
                    out.setdefault(d, {"type": "directory", "path": d, "oid": "0" * 40, "size": 0})
            if recursive or len(parts) == 1:
                out[path] = f.entry(path)
        return list(out.values())

    def tree(self, g: dict[str, str], _length: int) -> None:
        repo = self._repo(g)
        if repo is None:
            return
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        self._json(200, self._entries(repo, g.get("path") or "", recursive))

    def resolve(self, g: dict[str, str], _length: int) -> None:
        repo = self._repo(g)
        if repo is None:
            return
        f = repo.files.get(g["path"])
        if f is None:
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                          "X-Repo-Commit": repo.commits[-1]})  # fmt: skip
            return
        entry = f.entry(g["path"])
        etag = f'"{entry["lfs"]["oid"] if f.lfs else entry["oid"]}"'
        data, status, headers = f.data, 200, {"Accept-Ranges": "bytes"}
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if m:
            self.hub.range_reads += 1
            start = int(m[1]) if m[1] else max(0, len(data) - int(m[2]))
            end = int(m[2]) if m[1] and m[2] else len(data) - 1
            data, status = data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{len(f.data)}"
        self.send_response(status)
        headers |= {"X-Repo-Commit": repo.commits[-1], "ETag": etag, "Content-Length": str(len(data)),
                    "Content-Type": "application/octet-stream"}  # fmt: skip
        if f.lfs:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(len(f.data))}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)


DS = rf"/api/datasets/{REPO}"
ROUTES: dict[str, list[tuple[str, str]]] = {
    "POST": [
        (r"/api/repos/create", "create_repo"),
        (r"/api/validate-yaml", "validate_yaml"),
        (rf"{DS}/preupload/main", "preupload"),
        (rf"/datasets/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        (rf"{DS}/commit/main", "commit"),
    ],
    "PUT": [(r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put")],
    "GET": [
        (rf"{DS}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        (rf"{DS}(?:/revision/(?P<rev>[^/]+))?", "info"),
        (rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ],
    "HEAD": [(rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve")],
}
WRITES = {"create_repo", "preupload", "lfs_batch", "commit"}


class StandInHub(ThreadingHTTPServer):
    """``with StandInHub(token) as hub:`` serves on ``hub.url`` from a thread."""

    daemon_threads = True

    def __init__(self, token: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = HubState(token)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.state.base = self.url
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.shutdown()
        self.server_close()
