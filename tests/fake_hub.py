"""A loopback server speaking the Hugging Face Hub's file protocol, serving local folders as hub repos.

Point ``HF_ENDPOINT`` at :attr:`FakeHub.endpoint`. It answers what huggingface_hub asks when it downloads:

* ``HEAD``/``GET /{repo}/resolve/{revision}/{file}``: the file, with ``X-Repo-Commit`` (the commit the revision
  resolved to), ``ETag`` (plus ``X-Linked-Etag``/``X-Linked-Size`` for weights, as for LFS files) and
  ``Content-Length``; 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or ``EntryNotFound``;
* ``GET /api/models/{repo}/refs``: branches and (``include_prs=1``) pull-request refs;
* ``GET /api/models/{repo}/revision/{revision}``: the commit and its files;
* ``GET /api/models/{repo}/tree/{revision}``: every file of the commit (one page), LFS files with their SHA-256.

Dataset repos (:meth:`FakeHub.dataset`) answer the same under ``/datasets/{repo}/resolve/...`` and
``/api/datasets/{repo}/...``, which is what ``snapshot_download(..., repo_type="dataset")`` asks.

Each repo has commits (a file listing each) and refs (``main``, ``refs/pr/N``) pointing at commits. Every request
is logged in :attr:`FakeHub.requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow")


def commit_id(files: dict[str, bytes], parent: str = "") -> str:
    """A 40-hex commit id derived from the content (stable across runs)."""
    digest = hashlib.sha1(parent.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def folder_files(folder: Path) -> dict[str, bytes]:
    """The files of a model folder saved with ``save_pretrained``."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@dataclass
class Repo:
    """Commits by id (file name -> bytes) and refs (branch or PR ref -> commit id)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], ref: str | None = None, parent: str = "") -> str:
        """Add a commit (and point ``ref`` at it); return its id."""
        sha = commit_id(files, parent)
        self.commits[sha] = dict(files)
        if ref:
            self.refs[ref] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


class FakeHub:
    """The server; use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def repo(self, repo_id: str) -> Repo:
        """The repo ``repo_id`` (created empty)."""
        return self.repos.setdefault(repo_id, Repo())

    def dataset(self, repo_id: str) -> Repo:
        """The dataset repo ``repo_id`` (created empty)."""
        return self.repo(f"datasets/{repo_id}")

    def _send(self, handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes, body: bool):
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, code: str, body: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(handler, 404, headers, json.dumps({"error": code}).encode(), body)

    def _json(self, handler: BaseHTTPRequestHandler, data: object, body: bool) -> None:
        self._send(handler, 200, {"Content-Type": "application/json"}, json.dumps(data).encode(), body)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlsplit(handler.path)
        self.requests.append(f"{handler.command} {unquote(url.path)}")
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            self._api(handler, parts[2:], parse_qs(url.query), body)
        elif parts[:2] == ["api", "datasets"]:
            self._api(handler, ["datasets", *parts[2:]], parse_qs(url.query), body)
        elif parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
            self._resolve(handler, "/".join(parts[:3]), unquote(parts[4]), unquote("/".join(parts[5:])), body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(handler, "/".join(parts[:2]), unquote(parts[3]), unquote("/".join(parts[4:])), body)
        else:
            self._error(handler, "RepoNotFound", body)

    def _resolve(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, "RepoNotFound", body)
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(handler, "RevisionNotFound", body)
        data = repo.commits[sha].get(name)
        if data is None:
            return self._error(handler, "EntryNotFound", body, sha)
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {"X-Repo-Commit": sha, "ETag": etag, "Content-Type": "application/octet-stream"}
        if name.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(len(data))})
        return self._send(handler, 200, headers, data, body)

    def _api(self, handler: BaseHTTPRequestHandler, parts: list[str], query: dict, body: bool) -> None:
        for split in (3, 2, 1) if parts[0] == "datasets" else (2, 1):  # repo ids are org/name
            repo_id = "/".join(parts[:split])
            if repo_id in self.repos:
                break
        else:
            return self._error(handler, "RepoNotFound", body)
        repo, rest = self.repos[repo_id], parts[split:]
        if rest == ["refs"]:
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                for name, sha in repo.refs.items()
                if not name.startswith("refs/")
            ]
            pulls = [
                {"name": name, "ref": name, "targetCommit": sha}
                for name, sha in repo.refs.items()
                if name.startswith("refs/pr/")
            ]
            answer = {"branches": branches, "tags": [], "converts": []}
            if query.get("include_prs") == ["1"] or query.get("include_prs") == ["true"]:
                answer["pullRequests"] = pulls
            return self._json(handler, answer, body)
        if len(rest) >= 2 and rest[0] == "revision":
            sha = repo.resolve(unquote("/".join(rest[1:])))
            if sha is None:
                return self._error(handler, "RevisionNotFound", body)
            siblings = [{"rfilename": name} for name in sorted(repo.commits[sha])]
            name = repo_id.removeprefix("datasets/")
            return self._json(handler, {"id": name, "modelId": name, "sha": sha, "siblings": siblings}, body)
        if len(rest) >= 2 and rest[0] == "tree":
            sha = repo.resolve(unquote(rest[1]))
            if sha is None:
                return self._error(handler, "RevisionNotFound", body)
            return self._json(
                handler, [_tree_entry(name, data) for name, data in sorted(repo.commits[sha].items())], body
            )
        return self._error(handler, "EntryNotFound", body)


def _tree_entry(name: str, data: bytes) -> dict:
    """A file as the Hub's tree listing describes it (a git blob id; LFS files with their SHA-256 and size)."""
    blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
    entry: dict = {"type": "file", "oid": blob, "size": len(data), "path": name}
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
