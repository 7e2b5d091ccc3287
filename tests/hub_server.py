"""A Hub on 127.0.0.1 for the hub tests: git repos served by olah, a token-checking front, and tinyproxy.

Layout of one session:

    client ──(optional tinyproxy, logs every request)──> front ──> olah (offline, local git mirrors)
                                                        └──> .git/lfs/objects (LFS bodies, from disk)

The front is a small reverse proxy that (1) logs requests, (2) answers 401 GatedRepo for the gated
repo unless the right `Authorization: Bearer` header comes, (3) corrects olah's errors, (4) serves
the bodies of LFS files itself and (5) can cut a download after N bytes (a server dying mid-file),
corrupt one, or pace all through one link.
olah 0.5 reports an unknown revision and a missing file at a known revision as a missing
repository (401 RepoNotFound); the Hub answers 404 RevisionNotFound / EntryNotFound, so the front
asks git which case it is and rewrites the status.
LFS files (committed as pointers, tests/hub_lfs.py) are answered by the front from the pointer,
with the headers huggingface_hub reads from the Hub's /resolve/ (ETag and X-Linked-Etag = the
sha256 oid, X-Linked-Size, X-Repo-Commit; the Hub sends them on a 302 to its CDN, the front
answers 200 itself so one log sees every request), Range support, and the body sent from
.git/lfs/objects with socket.sendfile (2-4 GB/s to curl here). olah 0.5 hashes the whole body on
every HEAD (0.28 s for 256 MB) and sends it in 4 KiB pieces from memory (42 MB/s), too slow to
measure a 1 GB/s link; it still answers the listings and plain git files.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from hub_lfs import POINTER_MAX_BYTES, LfsObject, lfs_pointer
from hub_repos import _GIT, GATED_REPO, GATED_TOKEN, MAIN_REPO, HubRepos, build_repos


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RequestLog:
    """(method, path, authorization header) of every request a server saw, thread-safe."""

    entries: list[tuple[str, str, Optional[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, authorization: Optional[str]) -> None:
        with self.lock:
            self.entries.append((method, path, authorization))

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.entries]


_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
                "proxy-authorization", "trailer"}


class Link:
    """A shared bandwidth limit for every connection of a server (a token bucket of one link), in bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.free_at = time.monotonic()

    def send(self, nbytes: int) -> None:
        with self.lock:
            start = max(self.free_at, time.monotonic())
            self.free_at = start + nbytes / self.rate
            wait = self.free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def _die_mid_body(handler: http.server.BaseHTTPRequestHandler, dying: Optional[Callable[[], None]]) -> None:
    """Ends a cut body as a dying server does: what was written goes out, `dying` runs (a test stops
    olah there, so the server is gone before the client can retry), then the connection drops."""
    handler.wfile.flush()
    if dying is not None:
        dying()
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def _relay(handler: http.server.BaseHTTPRequestHandler, host: str, port: int, path: str,
           cut_after: Optional[int] = None, link: Optional[Link] = None, corrupt: bool = False,
           dying: Optional[Callable[[], None]] = None) -> None:
    """Sends the handler's request to host:port and streams the answer back (optionally cut after N body bytes,
    then `dying` run (see _die_mid_body), paced by `link`, or with its first byte flipped)."""
    headers = {key: value for key, value in handler.headers.items() if key.lower() not in _HOP_HEADERS}
    headers["Host"] = f"{host}:{port}"
    upstream = http.client.HTTPConnection(host, port, timeout=30)
    try:
        upstream.request(handler.command, path, headers=headers)
        response = upstream.getresponse()
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS:
                handler.send_header(key, value)
        body = None
        if response.getheader("Content-Length") is None and handler.command != "HEAD":
            # olah streams files chunked; the Hub sends Content-Length, which is what lets a client tell a
            # cut connection from the end of the file (and resume). Test files are small: buffer them.
            body = response.read()
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        sent = 0
        chunks = iter([body]) if body is not None else iter(lambda: response.read(64 * 1024), b"")
        for chunk in chunks:
            if corrupt and sent == 0 and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if cut_after is not None and sent + len(chunk) > cut_after:
                handler.wfile.write(chunk[: cut_after - sent])
                _die_mid_body(handler, dying)
                return
            for start in range(0, len(chunk), 1 << 20):
                piece = chunk[start:start + (1 << 20)]
                if link is not None:
                    link.send(len(piece))
                handler.wfile.write(piece)
            sent += len(chunk)
    finally:
        upstream.close()


# Bytes per socket.sendfile call of an LFS body: 1 MiB pieces through a link (as _relay paces), else large calls.
_PACED_PIECE = 1 << 20
_UNPACED_PIECE = 64 << 20
_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]*)")


def _send_lfs(handler: http.server.BaseHTTPRequestHandler, commit: str, lfs: LfsObject,
              cut_after: Optional[int] = None, link: Optional[Link] = None, corrupt: bool = False,
              dying: Optional[Callable[[], None]] = None) -> None:
    """Answers a /resolve/ request for an LFS file as the Hub does, the body from disk (same options as _relay)."""
    first, last = 0, lfs.size - 1
    requested = _RANGE.fullmatch(handler.headers.get("Range", "").strip())
    if requested is not None:
        first = int(requested.group(1))
        last = min(last, int(requested.group(2))) if requested.group(2) else last
    if first > last and lfs.size:
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{lfs.size}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    count = max(0, last + 1 - first)
    handler.send_response(206 if requested is not None else 200)
    for key, value in (("Content-Type", "application/octet-stream"), ("Content-Length", str(count)),
                       ("Accept-Ranges", "bytes"), ("ETag", f'"{lfs.oid}"'), ("X-Linked-Etag", f'"{lfs.oid}"'),
                       ("X-Linked-Size", str(lfs.size)), ("X-Repo-Commit", commit)):
        handler.send_header(key, value)
    if requested is not None:
        handler.send_header("Content-Range", f"bytes {first}-{last}/{lfs.size}")
    handler.end_headers()
    if handler.command == "HEAD":
        return
    limit = count if cut_after is None else min(count, cut_after)
    piece = _UNPACED_PIECE if link is None else _PACED_PIECE
    with open(lfs.path, "rb") as body:
        sent = 0
        if corrupt and first == 0 and limit > 0:
            handler.wfile.write(bytes([body.read(1)[0] ^ 0xFF]))
            sent = 1
        while sent < limit:
            size = min(piece, limit - sent)
            if link is not None:
                link.send(size)
            sent += handler.connection.sendfile(body, first + sent, size)
    if limit < count:
        _die_mid_body(handler, dying)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class FrontServer:
    """The reverse proxy in front of olah (see the module docstring)."""

    def __init__(self, olah_port: int, mirrors: Path) -> None:
        self.olah_port = olah_port
        self.mirrors = mirrors
        self.log = RequestLog()
        # Body bytes to send of a file download before dropping the connection, for the next `cuts_left` downloads.
        self.cut_after: Optional[int] = None
        self.cuts_left = 0
        # Safetensors downloads still to be sent with a flipped first byte (right size, wrong content).
        self.corrupt_left = 0
        # Bandwidth limit of file downloads (benchmarks/bench_hub.py); None: loopback speed.
        self.link: Optional[Link] = None
        # (path, Range header) of every file download.
        self.ranges: list[tuple[str, Optional[str]]] = []
        # Called with the path of a download the front cuts, after its partial body went out and before the
        # connection drops (a test stops olah there: the server dies mid-file).
        self.on_cut: Optional[Callable[[str], None]] = None
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _repo_and_revision(self, path: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
        """(repo id, revision, file) of an /api/models/... or /{repo}/resolve/{rev}/{file} path."""
        parts = urllib.parse.unquote(urllib.parse.urlsplit(path).path).strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else None
            return "/".join(parts[2:4]), revision, None
        if len(parts) >= 5 and parts[2] == "resolve":
            return "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        return None, None, None

    def _lfs_file(self, repo: str, revision: str, filename: str) -> Optional[tuple[str, LfsObject]]:
        """(commit, LFS object) when `filename` at `revision` is an LFS pointer; None for a plain file or an
        unknown repo, revision or file (olah answers those)."""
        folder = self.mirrors / "models" / repo
        if not (folder / ".git").is_dir():
            return None
        found = subprocess.run([*_GIT, "cat-file", "--batch-check"], cwd=folder, capture_output=True, text=True,
                               input=f"{revision}^{{commit}}\n{revision}:{filename}\n").stdout.splitlines()
        # One line each: "<sha> commit <size>" and "<sha> blob <size>", or "<name> missing".
        commit, blob = [line.split() for line in (found + ["", ""])[:2]]
        if len(commit) != 3 or commit[1] != "commit" or len(blob) != 3 or blob[1] != "blob" or \
                int(blob[2]) > POINTER_MAX_BYTES:
            return None
        data = subprocess.run([*_GIT, "cat-file", "blob", blob[0]], cwd=folder, capture_output=True,
                              check=True).stdout
        lfs = lfs_pointer(folder / ".git", data)
        return None if lfs is None else (commit[0], lfs)

    def _olah_error(self, repo: Optional[str], revision: Optional[str]) -> Optional[tuple[int, str, str]]:
        """The Hub's answer for a request olah called RepoNotFound, when git knows the repo."""
        folder = self.mirrors / "models" / (repo or "_")
        if repo is None or not (folder / ".git").is_dir() or revision is None:
            return None
        known = subprocess.run([*_GIT, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}"], cwd=folder,
                               capture_output=True).returncode == 0
        if not known:
            return 404, "RevisionNotFound", f"Invalid rev id: {revision}"
        return 404, "EntryNotFound", "Entry not found"

    def _handler_class(self) -> type:
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                front.log.add(self.command, self.path, self.headers.get("Authorization"))
                repo, revision, filename = front._repo_and_revision(self.path)
                if repo == GATED_REPO and self.headers.get("Authorization") != f"Bearer {GATED_TOKEN}":
                    self._answer(401, "GatedRepo", "Access to model org/gated is restricted. You must have "
                                 "access to it and be authenticated to access it. Please log in.")
                    return
                # An LFS body is sent from disk; asking olah first would make it hash the whole body.
                lfs = front._lfs_file(repo, revision, filename) if filename is not None else None
                if repo is not None and lfs is None:
                    probe = http.client.HTTPConnection("127.0.0.1", front.olah_port, timeout=30)
                    try:
                        probe.request("HEAD", self.path)
                        status = probe.getresponse().status
                    finally:
                        probe.close()
                    error = front._olah_error(repo, revision) if status == 401 else None
                    if error is not None:
                        self._answer(*error)
                        return
                cut, corrupt = None, False
                if filename is not None and self.command == "GET":
                    with front.lock:
                        front.ranges.append((self.path, self.headers.get("Range")))
                        weights = filename.endswith("safetensors")
                        if front.cut_after is not None and front.cuts_left > 0 and weights:
                            front.cuts_left -= 1
                            cut = front.cut_after
                        if front.corrupt_left > 0 and weights:
                            front.corrupt_left -= 1
                            corrupt = True
                hook = front.on_cut
                dying = (lambda: hook(self.path)) if hook is not None and cut is not None else None
                if lfs is not None:
                    _send_lfs(self, *lfs, cut, front.link, corrupt, dying)
                    return
                _relay(self, "127.0.0.1", front.olah_port, self.path, cut, front.link if filename else None, corrupt,
                       dying)

            do_HEAD = do_GET

        return Handler


class TinyProxy:
    """tinyproxy (Debian's package) forwarding plain HTTP on a free port; its log names every request.

    tinyproxy logs "Request (file descriptor N): GET http://host:port/path HTTP/1.1" as each request
    arrives (one connection per request), so the log proves which calls went through the proxy.
    """

    REQUEST_LINE = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/")

    def __init__(self, root: Path) -> None:
        executable = shutil.which("tinyproxy")
        if executable is None:
            raise FileNotFoundError("tinyproxy is not installed: `apt-get install tinyproxy` (make test installs "
                                    "it when run as root)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "tinyproxy.log"
        config = root / "tinyproxy.conf"
        config.write_text(f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nLogLevel Connect\n"
                          f'LogFile "{self.log_path}"\nDisableViaHeader Yes\n')
        self.process = subprocess.Popen([executable, "-d", "-c", os.fspath(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        self.log = TinyProxyLog(self.log_path)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tinyproxy exited ({self.process.returncode}): {self.log.text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not listen within 30 s: {self.log.text()[-2000:]}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class TinyProxyLog:
    """The requests of tinyproxy's log since the last clear(), as (method, absolute URL, None) entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = 0

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    @property
    def entries(self) -> list[tuple[str, str, Optional[str]]]:
        text = self.text()[self.start:]
        return [(method, url, None) for method, url in TinyProxy.REQUEST_LINE.findall(text)]

    def paths(self) -> list[str]:
        return [url for _, url, _ in self.entries]

    def clear(self) -> None:
        self.start = len(self.text())


class OlahServer:
    """olah-cli serving `mirrors` offline on a free port, ready when a revision answers."""

    def __init__(self, root: Path, mirrors: Path, probe_repo: str = MAIN_REPO) -> None:
        self.port = free_port()
        self.probe_repo = probe_repo
        config = root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{root / "olah-repos"}"\nmirrors-path = ["{mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\noffline = true\n")
        cli = Path(sys.executable).with_name("olah-cli")
        command = [os.fspath(cli)] if cli.exists() else [sys.executable, "-m", "olah.server"]
        self.command = [*command, "-c", os.fspath(config)]
        self.root = root
        self.log_path = root / "olah.log"
        self.start()

    def start(self) -> None:
        """Starts olah (again, after close: same port, same repos) and waits until it answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        # olah answers 401 on /api/models/ORG/REPO when offline; a revision endpoint answers 200.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited ({self.process.returncode}): {self.log_path.read_text()[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", f"/api/models/{self.probe_repo}/revision/main")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"olah did not answer within {timeout} s: {self.log_path.read_text()[-2000:]}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Hub:
    """The running servers and what they serve."""

    endpoint: str
    front: FrontServer
    proxy: Optional[TinyProxy]  # None when tinyproxy is not installed (proxy_missing says why)
    olah: OlahServer
    repos: HubRepos
    proxy_missing: str = ""


@pytest.fixture(scope="session", name="hub_session")
def hub_session_fixture(tmp_path_factory) -> Iterator[Hub]:
    """Repos, olah, the front and the proxy: built once per test session (~5 s)."""
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    repos = build_repos(mirrors)
    olah = OlahServer(root, mirrors)
    front = FrontServer(olah.port, mirrors)
    proxy, proxy_missing = None, ""
    try:
        proxy = TinyProxy(root)
    except FileNotFoundError as err:
        proxy_missing = str(err)
    try:
        yield Hub(front.endpoint, front, proxy, olah, repos, proxy_missing)
    finally:
        if proxy is not None:
            proxy.close()
        front.close()
        olah.close()


@pytest.fixture(name="hub")
def hub_fixture(hub_session: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """HF_ENDPOINT at the front, an empty HF_HOME / cache and no token, for this test only.

    huggingface_hub reads HF_ENDPOINT and the cache paths at import, so its constants are patched
    as well as the environment (which subprocesses see).
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    values = {"HF_ENDPOINT": hub_session.endpoint, "HF_HOME": os.fspath(home),
              "HF_HUB_CACHE": os.fspath(home / "hub")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_session.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_session.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", os.fspath(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", os.fspath(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.fspath(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", os.fspath(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if hub_session.olah.process.poll() is not None:  # a test stopped it
        hub_session.olah.start()
    hub_session.front.log.clear()
    if hub_session.proxy is not None:
        hub_session.proxy.log.clear()
    hub_session.front.cut_after = None
    hub_session.front.cuts_left = 0
    hub_session.front.corrupt_left = 0
    hub_session.front.ranges.clear()
    hub_session.front.link = None
    hub_session.front.on_cut = None
    return hub_session


@pytest.fixture(name="proxy")
def proxy_fixture(hub: Hub) -> TinyProxy:
    """The hub's tinyproxy, its log cleared; skips where it is not installed, fails on CI, which installs it."""
    if hub.proxy is None:
        message = f"the proxy tests need a real HTTP proxy: {hub.proxy_missing}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return hub.proxy
