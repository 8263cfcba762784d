"""An in-process fake of the Hugging Face Hub HTTP API, for offline tests.

Speaks the part of the Hub API that ``huggingface_hub`` 2.x, ``datasets`` 5.x and ``transformers`` 5.x
use to create repos, commit files (regular and LFS), list and download them: enough for
``HfApi.create_repo/upload_folder/create_commit``, ``hf_hub_download``, ``snapshot_download``,
``ModelCard.push_to_hub/load``, ``metadata_update``, ``DatasetDict.push_to_hub`` / ``load_dataset``
and ``PreTrainedModel.push_to_hub`` / ``from_pretrained``. Model, dataset and space repos.

Storage is in memory. Every commit gets a new 40-hex sha and a full snapshot of the repo's files,
so ``revision=<old sha>`` still resolves; ``main`` is always the latest commit. No branches other
than ``main``, no pull requests, no real authentication (any bearer token is accepted).

The client must use the plain LFS path, not Xet: set ``HF_HUB_DISABLE_XET=1`` and ``HF_ENDPOINT``
*before* importing huggingface_hub / datasets / transformers (they read both at import time).

Example:
    >>> hub = LocalHub().start()
    >>> os.environ["HF_ENDPOINT"] = hub.url  # before importing huggingface_hub
    >>> ...
    >>> hub.repo_files("user/repo", "dataset")["README.md"]
    >>> hub.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [  # (method, regex, handler name); first match wins
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("GET", rf"/api/(?P<t>models|datasets|spaces)/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("GET", rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", rf"/(?P<t>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("GET", rf"/(?P<t>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
# Extensions the preupload endpoint sends through LFS. datasets needs this for parquet: it preuploads
# shards from temporary files that are gone by the time it commits.
_LFS_SUFFIXES = tuple(".parquet .arrow .safetensors .bin .pt .pth .h5 .msgpack .onnx .npz".split())
_GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


class HubError(Exception):
    """An error answered to the client as ``status`` with an optional ``X-Error-Code`` header."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class _Commit:
    sha: str
    title: str
    date: str
    files: dict[str, bytes]  # full snapshot: path -> content
    lfs: frozenset[str]  # paths stored through LFS


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    history: list[_Commit] = field(default_factory=list)  # oldest first; "main" is history[-1]

    def resolve(self, revision: str) -> _Commit:
        if revision in ("main", "HEAD"):
            return self.history[-1]
        for commit in self.history:
            if commit.sha == revision:
                return commit
        raise HubError(404, f"Revision {revision!r} not found in {self.repo_id}", "RevisionNotFound")


class LocalHub:
    """A fake Hugging Face Hub served from a daemon thread on ``127.0.0.1``.

    Example:
        >>> hub = LocalHub().start()
        >>> hub.url                      # e.g. "http://127.0.0.1:40123"
        >>> hub.fail_next_commits(1)     # the next commit answers HTTP 500
        >>> hub.commits("user/repo", "dataset")  # list of commit shas, oldest first
        >>> hub.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, user: str = "test-user"):
        self.host, self.port, self.user = host, port, user
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lfs: dict[str, bytes] = {}  # sha256 -> content
        self._fail_commits = 0
        self._fail_status = 500
        self._fail_after = 0
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.unhandled: list[str] = []  # "METHOD path" of requests no route matched (for debugging)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalHub:
        """Start serving in a daemon thread and return ``self``."""
        hub = self

        class Handler(_Handler):
            local_hub = hub

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="LocalHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ test helpers
    def repo_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Files of a repo at ``revision`` (``main`` or a commit sha): ``{path: content}``."""
        with self._lock:
            return dict(self._get_repo(repo_type, repo_id).resolve(revision).files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Commit shas of a repo, oldest first (the first one is the repo's initial commit)."""
        with self._lock:
            return [c.sha for c in self._get_repo(repo_type, repo_id).history]

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether the repo was created."""
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def fail_next_commits(self, n: int = 1, status: int = 500, after: int = 0) -> None:
        """Let ``after`` commits succeed, then answer the next ``n`` with HTTP ``status`` (nothing committed).

        ``fail_next_commits(0)`` clears the switch.
        """
        with self._lock:
            self._fail_commits, self._fail_status, self._fail_after = n, status, after

    # ------------------------------------------------------------------ state (called by the handler)
    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_type}/{repo_id} not found", "RepoNotFound")
        return repo

    def _new_commit(self, repo: _Repo, title: str, files: dict[str, bytes], lfs: set[str]) -> _Commit:
        self._counter += 1
        parent = repo.history[-1].sha if repo.history else ""
        seed = f"{repo.repo_type}/{repo.repo_id}|{parent}|{title}|{self._counter}|" + "|".join(
            f"{p}:{_git_oid(c)}" for p, c in sorted(files.items())
        )
        commit = _Commit(hashlib.sha1(seed.encode()).hexdigest(), title, _now(), files, frozenset(lfs))
        repo.history.append(commit)
        return commit

    def _entry(self, commit: _Commit, path: str) -> dict[str, Any] | None:
        """Tree / paths-info entry for a file or folder of ``commit``, or None if absent."""
        if path in commit.files:
            content = commit.files[path]
            entry: dict[str, Any] = {
                "type": "file",
                "path": path,
                "size": len(content),
                "oid": _git_oid(content),
            }
            if path in commit.lfs:
                entry["lfs"] = {
                    "oid": hashlib.sha256(content).hexdigest(),
                    "size": len(content),
                    "pointerSize": 134,
                }
            return entry
        if path == "" or any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
            return {
                "type": "directory",
                "path": path.rstrip("/"),
                "size": 0,
                "oid": hashlib.sha1(path.encode()).hexdigest(),
            }
        return None

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}"


class _Handler(BaseHTTPRequestHandler):
    """Dispatches requests to ``do_<route>`` methods; every answer is JSON or bytes with Content-Length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = (
        True  # headers and body are separate writes: avoid a 40 ms delayed-ACK stall each
    )
    local_hub: LocalHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()
        method = "GET" if self.command == "HEAD" else self.command
        for route_method, pattern, name in _ROUTES:
            match = re.fullmatch(pattern, url.path)
            if route_method == method and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    with self.local_hub._lock:
                        getattr(self, f"do_{name}")(**params)
                except HubError as err:
                    self._send_json({"error": err.message, **err.extra}, err.status, err.code)
                return
        self.local_hub.unhandled.append(f"{self.command} {self.path}")
        self._send_json({"error": f"LocalHub has no route for {self.command} {url.path}"}, 404)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Any:
        return json.loads(self.body or b"{}")

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, error_code: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if error_code:
            headers["X-Error-Code"] = error_code
        if status >= 400:
            headers["X-Error-Message"] = (
                str(payload.get("error", ""))[:200].encode("ascii", "replace").decode()
            )
        self._send(status, json.dumps(payload).encode(), headers)

    def _repo(self, t: str, repo: str) -> _Repo:
        return self.local_hub._get_repo(_TYPES.get(t.strip("/") or "models", "model"), repo)

    # ------------------------------------------------------------------ account / validation
    def do_whoami(self) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, "Invalid credentials in Authorization header")
        user = self.local_hub.user
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": user,
                "fullname": user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def do_validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        match = re.match(r"^---\r?\n(.*?)\r?\n---", content, re.S)
        try:
            if match and not isinstance(yaml.safe_load(match.group(1)) or {}, dict):
                raise HubError(400, "YAML metadata must be a mapping")
        except yaml.YAMLError as err:
            raise HubError(400, f"Invalid YAML metadata: {err}") from err
        self._send_json({"errors": [], "warnings": []})

    def do_agent_harnesses(self) -> None:  # huggingface_hub fetches this registry once; answer an empty one
        self._send_json({"standardEnvVars": [], "harnesses": {}})

    # ------------------------------------------------------------------ repos
    def do_create_repo(self) -> None:
        hub, payload = self.local_hub, self._json_body()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
        if (repo_type, repo_id) in hub._repos:
            url = hub._repo_url(hub._repos[repo_type, repo_id])
            # huggingface_hub reads "url" from the 409 answer when exist_ok=True
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
        repo = hub._repos[repo_type, repo_id] = _Repo(repo_id, repo_type, private)
        hub._new_commit(repo, "initial commit", {".gitattributes": _GITATTRIBUTES}, set())
        self._send_json({"url": hub._repo_url(repo), "name": repo_id, "id": repo_id})

    def do_delete_repo(self) -> None:
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or self.local_hub.user}/{payload['name']}"
        self.local_hub._get_repo(payload.get("type") or "model", repo_id)
        del self.local_hub._repos[payload.get("type") or "model", repo_id]
        self._send_json({})

    def do_repo_info(self, t: str, repo: str, rev: str = "main") -> None:
        r = self._repo(t, repo)
        commit = r.resolve(rev)
        card = commit.files.get("README.md", b"").decode("utf-8", "replace")
        match = re.match(r"^---\r?\n(.*?)\r?\n---", card, re.S)
        siblings = [
            {"rfilename": p, "size": len(c), "blobId": _git_oid(c)} for p, c in sorted(commit.files.items())
        ]
        self._send_json(
            {
                "id": r.repo_id,
                "_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24],
                "author": r.repo_id.split("/")[0],
                "sha": commit.sha,
                "private": r.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": commit.date,
                "createdAt": r.history[0].date,
                "siblings": siblings,
                "cardData": (yaml.safe_load(match.group(1)) if match else None) or {},
            }
        )

    # ------------------------------------------------------------------ listing
    def do_tree(self, t: str, repo: str, rev: str, path: str = "") -> None:
        commit = self._repo(t, repo).resolve(rev)
        path = path.strip("/")
        entry = self.local_hub._entry(commit, path)
        if entry is None or entry["type"] != "directory":
            raise HubError(404, f"Folder {path!r} not found at {rev}", "EntryNotFound")
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        names: set[str] = set()
        for file_path in commit.files:
            if file_path.startswith(prefix):
                parts = file_path[len(prefix) :].split("/")
                stop = len(parts) if recursive else 1
                names.update(prefix + "/".join(parts[: i + 1]) for i in range(stop))
        self._send_json([self.local_hub._entry(commit, name) for name in sorted(names)])

    def do_paths_info(self, t: str, repo: str, rev: str) -> None:
        commit = self._repo(t, repo).resolve(rev)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = self._json_body().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        entries = [self.local_hub._entry(commit, p.strip("/")) for p in paths]
        self._send_json([e for e in entries if e is not None])

    # ------------------------------------------------------------------ uploads
    def do_preupload(self, t: str, repo: str, rev: str) -> None:
        head = self._repo(t, repo).resolve(rev)
        files = [
            {
                "path": f["path"],
                "shouldIgnore": False,
                "uploadMode": "lfs" if f["path"].endswith(_LFS_SUFFIXES) and f.get("size", 0) else "regular",
            }
            for f in self._json_body().get("files", [])
        ]
        self._send_json({"files": files, "commitOid": head.sha})

    def do_lfs_batch(self, repo: str, t: str = "") -> None:
        hub = self.local_hub
        self._repo(t, repo)
        objects = []
        for obj in self._json_body().get("objects", []):
            out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in hub._lfs:
                out["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(out)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, body, {"Content-Type": "application/vnd.git-lfs+json"})

    def do_lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"LFS upload content does not match oid {oid}")
        self.local_hub._lfs[oid] = self.body
        self._send(200, b"", {})

    def do_commit(self, t: str, repo: str, rev: str) -> None:
        hub, r = self.local_hub, self._repo(t, repo)
        if self.query.get("create_pr") == "1" or rev != "main":
            raise HubError(
                400, f"LocalHub only commits to 'main' (got revision={rev!r}, create_pr={self.query})"
            )
        if hub._fail_commits > 0 and hub._fail_after > 0:
            hub._fail_after -= 1
        elif hub._fail_commits > 0:
            hub._fail_commits -= 1
            raise HubError(hub._fail_status, "LocalHub: simulated server failure")
        head = r.history[-1]
        files, lfs, title = dict(head.files), set(head.lfs), "Commit"
        for line in filter(None, self.body.splitlines()):
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary") or title
                if value.get("parentCommit") not in (None, head.sha):
                    raise HubError(412, f"parentCommit {value['parentCommit']} is not the head {head.sha}")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in hub._lfs:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = hub._lfs[value["oid"]]
                lfs.add(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"Cannot delete missing file {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(folder)]:
                    del files[path]
            else:
                raise HubError(400, f"LocalHub does not support commit operation {key!r}")
        commit = hub._new_commit(r, title, files, lfs & files.keys())
        self._send_json(
            {
                "success": True,
                "commitOid": commit.sha,
                "pullRequestUrl": None,
                "commitUrl": f"{hub._repo_url(r)}/commit/{commit.sha}",
            }
        )

    # ------------------------------------------------------------------ downloads
    def do_resolve(self, repo: str, rev: str, path: str, t: str = "") -> None:
        commit = self._repo(t, repo).resolve(rev)
        if path not in commit.files:
            raise HubError(404, f"Entry {path!r} not found at {rev}", "EntryNotFound")
        content = commit.files[path]
        etag = hashlib.sha256(content).hexdigest() if path in commit.lfs else _git_oid(content)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        range_match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if range_match and self.command == "GET":
            start = int(range_match.group(1) or 0)
            end = min(int(range_match.group(2) or len(content) - 1), len(content) - 1)
            if start >= len(content):
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self._send(206, content[start : end + 1], headers)
        self._send(200, content, headers)
