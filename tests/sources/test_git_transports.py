"""The git source over the transports besides file://, each served by a real process on
127.0.0.1: git:// (`git daemon`), ssh (git's own ssh transport, through GIT_SSH_COMMAND)
and https (`git http-backend` behind a loopback TLS server asking for Basic auth, where
the credentials written in the URL must reach git through its environment only)."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import trustme

from tests.conftest import apoll, free_port, model_yaml, poll
from tests.sources.test_git import Harness, Repo, applied, git


def names(h: Harness) -> set[str]:
    return {key.name for key in h.store.declared_keys()}


# -- git:// -------------------------------------------------------------------------------
@pytest.fixture
def daemon(repo: Repo, tmp_path: Path) -> Iterator[str]:
    """`git daemon` serving the repository's directory on a free loopback port: the URL of
    the repository on it. Ready once `git ls-remote` answers; killed (its process group:
    the upload-packs it forked) at the end."""
    port = free_port()
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            *("git", "daemon", "--export-all", "--reuseaddr", "--informative-errors"),
            f"--base-path={repo.bare.parent}",
            f"--port={port}",
            "--listen=127.0.0.1",
            str(repo.bare.parent),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"git://127.0.0.1:{port}/{repo.bare.name}"

    def answers() -> bool:
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        done = subprocess.run(["git", "ls-remote", url], capture_output=True, timeout=10)
        return done.returncode == 0

    try:
        poll(answers, what="git daemon answering", timeout=20)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


async def test_over_git_daemon(repo: Repo, make: Callable[..., Harness], daemon: str) -> None:
    """git://: a commit is applied, a bad commit keeps the previous one, a tag is pinned."""
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    git(repo.work, "tag", "v1")
    git(repo.work, "push", "-q", "origin", "v1")
    h = make(daemon, ref="main", interval=0.1, name="branch")
    pinned = make(daemon, ref="v1", interval=0.1, name="tag")
    await h.source.start()
    await pinned.source.start()
    await apoll(lambda: applied(h) == f"main@sha1:{first}", what="applied over git://")
    await apoll(lambda: applied(pinned) == f"v1@sha1:{first}", what="the tag over git://")
    assert h.state.git is not None and h.state.git.url == daemon

    bad = repo.commit({"b.yaml": "kind: Model\nmetadata: [\n"})
    await apoll(lambda: h.state.errors, what="the bad commit's error")
    assert names(h) == {"a"} and applied(h) == f"main@sha1:{first}"
    assert h.state.errors[0].file == "b.yaml" and bad in h.state.errors[0].message

    fixed = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    await apoll(lambda: applied(h) == f"main@sha1:{fixed}", what="the fix applied")
    assert names(h) == {"a", "b"} and h.state.errors == ()
    # The tag stayed where it was all along.
    assert applied(pinned) == f"v1@sha1:{first}" and names(pinned) == {"a"}


# -- ssh ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["ssh://127.0.0.1{path}", "127.0.0.1:{path}"])
async def test_over_ssh_through_git_ssh_command(
    repo: Repo,
    make: Callable[..., Harness],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    """ssh, as far as it can be tested without an sshd: GIT_SSH_COMMAND (in hive's
    environment) names a script standing in for `ssh`, which git runs as it runs ssh
    (`<cmd> [-o SendEnv=GIT_PROTOCOL] 127.0.0.1 "git-upload-pack '/path'"`); the script runs
    that remote command here, and git speaks its protocol over the script's stdin and
    stdout. So this covers git's real ssh transport for `ssh://` and `host:path` URLs and
    hive passing GIT_SSH_COMMAND through to git; it does not cover an ssh connection,
    keys, host keys or known_hosts (which are ssh's, configured as for any git)."""
    log = tmp_path / "ssh.log"
    fake = tmp_path / "fake-ssh"
    fake.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\nfor last; do :; done\nexec sh -c \"$last\"\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))
    monkeypatch.setenv("GIT_SSH_VARIANT", "ssh")
    url = form.format(path=repo.bare)
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(url, interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied over ssh")
    calls = log.read_text().splitlines()
    assert calls and all(f"127.0.0.1 git-upload-pack '{repo.bare}'" in c for c in calls), calls
    second = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    await apoll(lambda: applied(h) == f"HEAD@sha1:{second}", what="the next commit")
    assert names(h) == {"a", "b"}


# -- https with credentials ---------------------------------------------------------------
PASSWORD = "s3cret@pass:w0rd-for-the-fleet"
USER = "fleet-reader"


class GitHttp:
    """`git http-backend` (CGI) behind a loopback HTTPS server that wants Basic auth. At
    every request it looks through /proc for a process whose command line holds the
    password (git's own, while they fetch), and keeps what it finds."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.leaks: list[str] = []
        self.authorized = 0
        self.refused = 0
        ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.serve(self)

            def do_POST(self) -> None:
                outer.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, user: str, password: str) -> str:
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"https://{userinfo}@127.0.0.1:{self.port}/{self.root.name}/remote.git"

    def look_for_leaks(self) -> None:
        needles = (PASSWORD.encode(), quote(PASSWORD, safe="").encode())
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if any(n in cmdline for n in needles):
                self.leaks.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        self.look_for_leaks()
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            if handler.headers.get("Authorization"):
                self.refused += 1
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="fleet"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        self.authorized += 1
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": USER,
            "REMOTE_ADDR": "127.0.0.1",
        }
        for header, var in (("Git-Protocol", "GIT_PROTOCOL"), ("Content-Encoding", None)):
            value = handler.headers.get(header)
            if value:
                env[var or "HTTP_CONTENT_ENCODING"] = value
                env[f"HTTP_{header.upper().replace('-', '_')}"] = value
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=30
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def git_https(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttp]:
    server = GitHttp(repo.bare.parent, tmp_path)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
    yield server
    server.close()


async def test_https_credentials_reach_git_through_its_environment_only(
    repo: Repo, make: Callable[..., Harness], git_https: GitHttp, tmp_path: Path
) -> None:
    """The URL's user and password fetch over https (Basic auth), yet no process's
    command line (seen in /proc while git fetches) holds the password, and a wrong one
    fails with a message that names neither."""
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(git_https.url(USER, PASSWORD), interval=0.1, name="good")
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied over https")
    assert git_https.authorized > 0
    assert git_https.leaks == [], git_https.leaks

    wrong = make(git_https.url(USER, "not-the-password-at-all"), interval=60, name="wrong")
    await wrong.source.start()
    await apoll(lambda: wrong.state.errors, what="the refused fetch")
    message = wrong.state.errors[0].message
    assert "Authentication failed" in message, message
    assert git_https.refused > 0 and git_https.leaks == [], git_https.leaks
    shown = repr(h.state) + repr(wrong.state)
    shown += repr([(e.message, e.data) for e in wrong.bus.read(0, limit=1000)[0]])
    for secret in (PASSWORD, quote(PASSWORD, safe=""), "not-the-password-at-all"):
        assert secret not in shown
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_only_http_credentials_are_moved() -> None:
    from hive.sources.git_remote import remote

    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "a.b", "GIT_CONFIG_VALUE_0": "c"}
    moved = remote("https://u%40x:p%3Aw@h.example:8443/o/r.git?q=1", environ=env)
    assert moved.url == "https://h.example:8443/o/r.git?q=1"
    assert moved.env["GIT_CONFIG_COUNT"] == "3"  # after the one hive's environment has
    assert moved.env["GIT_CONFIG_KEY_2"] == "credential.helper"
    assert moved.env["HIVE_GIT_USERNAME"] == "u@x" and moved.env["HIVE_GIT_PASSWORD"] == "p:w"
    for url in ("ssh://git@h/o/r.git", "git@h:o/r.git", "git://h/r.git", "file:///r.git"):
        assert remote(url) == remote(url) and remote(url).url == url and not remote(url).env
    assert remote("https://h/o/r.git").env == {}
