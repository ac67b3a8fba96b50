"""A loopback HTTP server that serves model repositories in the hub's layout, for tests.

It serves the requests huggingface_hub 2.4 makes for repository info and
file resolution (HEAD with ETag and commit headers, GET with Range), so
downloads, cancels and resumes run against real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub.constants
import pytest

TINY_REPO = "test/tiny-bart"
_INFO_PATH = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")
_RESOLVE_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    commit: str
    files: dict[str, bytes]
    # LFS files the listing should claim a different sha256 for (a damaged transfer).
    wrong_sha256: set[str] = field(default_factory=set)

    def is_lfs(self, name: str) -> bool:
        return not name.endswith((".json", ".txt", ".md"))

    def etag(self, name: str) -> str:
        content = self.files[name]
        return hashlib.sha256(content).hexdigest() if self.is_lfs(name) else git_blob_id(content)

    def siblings(self) -> list[dict]:
        listing = []
        for name, content in sorted(self.files.items()):
            entry = {"rfilename": name, "size": len(content), "blobId": git_blob_id(content)}
            if self.is_lfs(name):
                sha256 = hashlib.sha256(content).hexdigest()
                if name in self.wrong_sha256:
                    sha256 = "0" * 64
                entry["lfs"] = {"size": len(content), "sha256": sha256, "pointerSize": 134}
            listing.append(entry)
        return listing


class FakeHub:
    """A loopback HTTP server with the hub's model_info and resolve endpoints."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.chunk_bytes = 16 * 1024  # body chunk size of LFS files
        self.chunk_delay_s = 0.0  # pause after each LFS chunk, to make a download slow enough to cancel
        self.ignore_range = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> FakeRepo:
        commit = hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
        self.repos[repo_id] = FakeRepo(commit, dict(files))
        return self.repos[repo_id]

    def add_folder(self, repo_id: str, folder: Path) -> FakeRepo:
        files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
        return self.add_repo(repo_id, files)

    def record(self, method: str, path: str, byte_range: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, byte_range))

    def file_requests(self, method: str, name: str) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [request for request in self.requests if request[0] == method and request[1].endswith("/" + name)]


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

        def do_GET(self):
            self._serve(send_body=True)

        def do_HEAD(self):
            self._serve(send_body=False)

        def _serve(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.record(self.command, path, self.headers.get("Range"))
            info = _INFO_PATH.match(path)
            if info and self.command == "GET":
                self._send_info(info["repo"], info["revision"] or "main")
                return
            resolve = _RESOLVE_PATH.match(path)
            if resolve:
                self._send_file(resolve["repo"], resolve["revision"], resolve["file"], send_body)
                return
            self._send_error(404, "EntryNotFound")

        def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send_error(404, "RepoNotFound")
                return None
            if revision not in ("main", repo.commit):
                self._send_error(404, "RevisionNotFound")
                return None
            return repo

        def _send_info(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            body = json.dumps({"id": repo_id, "sha": repo.commit, "siblings": repo.siblings()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, repo_id: str, revision: str, name: str, send_body: bool) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            if name not in repo.files:
                self._send_error(404, "EntryNotFound", commit=repo.commit)
                return
            content = repo.files[name]
            start = 0
            byte_range = self.headers.get("Range")
            if byte_range and not hub.ignore_range and self.command == "GET":
                start = int(re.fullmatch(r"bytes=(\d+)-", byte_range)[1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{repo.etag(name)}"')
            if repo.is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.send_header("Content-Length", str(len(content) - start))
            self.end_headers()
            if send_body:
                self._write_body(content[start:], slow=repo.is_lfs(name))

        def _write_body(self, body: bytes, slow: bool) -> None:
            step = hub.chunk_bytes if slow else len(body) or 1
            try:
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset : offset + step])
                    self.wfile.flush()
                    if slow and hub.chunk_delay_s:
                        time.sleep(hub.chunk_delay_s)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client cancelled

        def _send_error(self, status: int, code: str, commit: str | None = None) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


@pytest.fixture
def hub_online(monkeypatch):
    """Allow requests although conftest sets HF_HUB_OFFLINE=1.

    huggingface_hub 2.4 reads the variable once, into
    ``constants.HF_HUB_OFFLINE``, and its request hook checks that constant on
    every request, so patching the constant is enough.
    """
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(hub_online):
    hub = FakeHub().start()
    yield hub
    hub.stop()


def serve_tiny(hub: FakeHub, tiny_model_dir: Path, extra_files: dict[str, bytes] | None = None) -> FakeRepo:
    repo = hub.add_folder(TINY_REPO, tiny_model_dir)
    repo.files.update(extra_files or {})
    return repo
