"""Worker processes for real: ports bound by real sockets, processes spawned in their own
session and signalled by group, state records on disk, and the log rotated and tailed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive.actuators.workers import (
    PortUnavailable,
    SpawnFailed,
    allocate_port,
    log_path,
    port_free,
    remove_state,
    rotate_log,
    signal_group,
    spawn,
    state_path,
    stop_group,
    tail_lines,
    worker_env,
    write_state,
)
from hive.model.workers import WorkerState
from hive.observers.processes import LiveWorker, read_states
from tests.conftest import poll

HOST = "127.0.0.1"


# -- ports ---------------------------------------------------------------------------------
@contextlib.contextmanager
def held_ports(count: int) -> Iterator[list[socket.socket]]:
    """`count` consecutive loopback ports, each held by a real listening socket."""
    for _ in range(50):
        held: list[socket.socket] = []
        try:
            first = socket.create_server((HOST, 0))
            held.append(first)
            base = first.getsockname()[1]
            if base + count > 65536:
                raise OSError("too close to the top")
            held += [socket.create_server((HOST, base + i)) for i in range(1, count)]
        except OSError:
            for sock in held:
                sock.close()
            continue
        try:
            yield held
        finally:
            for sock in held:
                sock.close()
        return
    raise AssertionError(f"found no {count} consecutive free ports")


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_a_listening_port_is_not_free_and_is_free_again_once_closed() -> None:
    with held_ports(1) as (sock,):
        port = port_of(sock)
        assert not port_free(HOST, port)
        assert not port_free("0.0.0.0", port)
    assert port_free(HOST, port)


def test_a_wanted_port_that_is_free_is_given() -> None:
    with held_ports(1) as (sock,):
        port = port_of(sock)
    assert allocate_port(host=HOST, wanted=port, ports=range(1, 2), taken={}, name="a") == port


def test_a_wanted_port_held_by_another_process_is_refused_with_advice() -> None:
    with held_ports(1) as (sock,):
        port = port_of(sock)
        with pytest.raises(PortUnavailable) as caught:
            allocate_port(host=HOST, wanted=port, ports=range(9000, 10000), taken={}, name="a")
    assert str(caught.value) == (
        f"port {port} on {HOST} is in use by another process (choose another spec.port, "
        "or leave it out to get a free one)"
    )
    assert caught.value.reason == "PortInUse"


def test_a_wanted_port_of_another_worker_is_refused_with_its_name() -> None:
    with held_ports(1) as (sock,):
        port = port_of(sock)
    with pytest.raises(PortUnavailable, match=f"^port {port} is already used by worker other$"):
        allocate_port(host=HOST, wanted=port, ports=range(1, 2), taken={port: "other"}, name="a")


def test_a_workers_own_port_is_given_back_while_its_old_process_still_listens() -> None:
    with held_ports(1) as (sock,):
        port = port_of(sock)
        got = allocate_port(host=HOST, wanted=port, ports=range(1, 2), taken={port: "a"}, name="a")
        assert got == port


def test_the_first_free_port_skips_real_listeners_and_hives_own() -> None:
    with held_ports(4) as socks:
        base = port_of(socks[0])
        socks[1].close()  # free, but hive's own worker is about to take it
        socks[2].close()  # free
        got = allocate_port(
            host=HOST, wanted=None, ports=range(base, base + 4), taken={base + 1: "w"}, name="a"
        )
    assert got == base + 2


def test_no_free_port_names_the_range() -> None:
    with held_ports(3) as socks:
        base = port_of(socks[0])
        socks[2].close()
        with pytest.raises(PortUnavailable) as caught:
            allocate_port(
                host=HOST, wanted=None, ports=range(base, base + 3), taken={base + 2: "w"}, name="a"
            )
    assert str(caught.value) == (
        f"no free port in {base}-{base + 2} on {HOST} "
        "(1 used by hive's workers, the rest by others)"
    )


# -- environment -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "extra", "env"),
    [
        ({"PATH": "/bin", "HIVE_TOKEN": "secret"}, {}, {"PATH": "/bin"}),
        (
            {"PATH": "/bin", "HIVE_TOKEN": "secret", "HIVE_HOME": "/h"},
            {"HIVE_WORKER_ID": "w", "CUDA_VISIBLE_DEVICES": ""},
            {"PATH": "/bin", "HIVE_HOME": "/h", "HIVE_WORKER_ID": "w", "CUDA_VISIBLE_DEVICES": ""},
        ),
        ({"PATH": "/bin"}, {"PATH": "/opt/bin"}, {"PATH": "/opt/bin"}),
        ({}, {}, {}),
    ],
)
def test_worker_env(base: dict[str, str], extra: dict[str, str], env: dict[str, str]) -> None:
    assert worker_env(base=base, extra=extra) == env


# -- spawn and signals -------------------------------------------------------------------------
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[Spawn]:
    """spawn() with the worker marker in the environment; every group is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        code: str, *, log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        base = {**os.environ, "HIVE_TOKEN": "secret"}
        extra = {"HIVE_WORKER_ID": "test-worker", **(env or {})}
        proc = spawn(
            argv=[sys.executable, "-c", code],
            env=worker_env(base=base, extra=extra),
            log_path=log or tmp_path / "logs" / "w.log",
            banner="starting w",
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def log_line(proc: subprocess.Popen[bytes], log: Path, prefix: str) -> str:
    """The first line of `log` that starts with `prefix`, once the live worker wrote it
    whole (with its newline: an unbuffered print writes the text and the newline apart)."""

    def find() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}: {log.read_text()!r}")
        whole = log.read_text().split("\n")[:-1]
        return next((x for x in whole if x.startswith(prefix)), None)

    return poll(find, what=f"a line {prefix!r} in {log}")


def test_a_spawned_worker_logs_after_the_banner_without_hives_token(
    spawned: Spawn, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "w.log"
    log.parent.mkdir()
    log.write_bytes(b"an earlier run\n")
    code = (
        "import os, sys\n"
        "print('to stdout', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        "print('token', os.environ.get('HIVE_TOKEN'), os.environ['EXTRA'], flush=True)\n"
    )
    proc = spawned(code, log=log, env={"EXTRA": "given"})
    assert proc.wait(timeout=10) == 0
    assert log.read_text() == (
        "an earlier run\n--- hive: starting w ---\nto stdout\nto stderr\ntoken None given\n"
    )


def test_a_spawned_worker_leads_its_own_process_group_in_our_session(
    spawned: Spawn, tmp_path: Path
) -> None:
    proc = spawned("import time; print('up', flush=True); time.sleep(60)")
    log = tmp_path / "logs" / "w.log"
    log_line(proc, log, "up")
    assert os.getpgid(proc.pid) == proc.pid  # one killpg reaches it and its children
    assert os.getpgid(proc.pid) != os.getpgid(0)  # no signal for hive's group reaches it
    # hive's session, so the scheduler does not weigh each worker as a session (autogroup)
    assert os.getsid(proc.pid) == os.getsid(0)


def test_a_missing_executable_is_spawn_failed_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-binary"
    with pytest.raises(SpawnFailed) as caught:
        spawn(argv=[str(missing), "--port", "1"], env={}, log_path=tmp_path / "w.log", banner="b")
    assert str(caught.value) == f"cannot run {missing}: No such file or directory"
    assert caught.value.reason == "SpawnFailed"


def test_a_file_that_is_not_executable_is_spawn_failed(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(SpawnFailed, match=f"^cannot run {plain}: Permission denied$"):
        spawn(argv=[str(plain)], env={}, log_path=tmp_path / "w.log", banner="b")


def test_signal_group_stops_the_worker_then_says_the_group_is_gone(
    spawned: Spawn, tmp_path: Path
) -> None:
    proc = spawned("import time; print('up', flush=True); time.sleep(60)")
    log_line(proc, tmp_path / "logs" / "w.log", "up")
    assert signal_group(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert not signal_group(proc.pid, signal.SIGTERM)


def test_signal_group_reaches_the_workers_own_children(spawned: Spawn, tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = spawned(code)
    log = tmp_path / "logs" / "w.log"
    line = log_line(proc, log, "child ")
    grandchild = psutil.Process(int(line.split()[1]))
    assert os.getpgid(grandchild.pid) == proc.pid

    assert signal_group(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    def grandchild_gone() -> bool:
        try:
            return grandchild.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    poll(grandchild_gone, what="the grandchild to die with its group")


# -- state records -------------------------------------------------------------------------------
def make_state(name: str, *, pid: int = 4242, home: Path = Path("/h")) -> WorkerState:
    return WorkerState(
        name=name,
        worker_id=f"hive-{name}",
        instance="inst-1",
        pid=pid,
        create_time=1_700_000_000.25,
        host=HOST,
        port=9001,
        argv=("/usr/bin/python3", "-m", "worker", "--port", "9001"),
        runtime="llama-cpp",
        worker_type="cpu",
        model="tiny",
        model_path=home / "models" / "tiny" / "tiny.gguf",
        model_sha256="ab" * 32,
        device="CPU-0",
        spec_hash="0123456789abcdef",
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        restarts=2,
        log_path=log_path(home, name),
    )


def test_state_records_round_trip_and_are_removed(tmp_path: Path) -> None:
    a, b = make_state("a", pid=10), make_state("b", pid=11)
    write_state(tmp_path, b)
    write_state(tmp_path, a)
    assert state_path(tmp_path, "a") == tmp_path / "state" / "workers" / "a.json"
    assert read_states(tmp_path) == ([a, b], [])

    newer = a.model_copy(update={"pid": 12, "restarts": 3})
    write_state(tmp_path, newer)
    assert read_states(tmp_path) == ([newer, b], [])

    remove_state(tmp_path, "a")
    remove_state(tmp_path, "never-was")
    assert read_states(tmp_path) == ([b], [])
    assert sorted(p.name for p in (tmp_path / "state" / "workers").iterdir()) == ["b.json"]


def test_a_corrupt_state_record_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    good = make_state("good")
    write_state(tmp_path, good)
    directory = tmp_path / "state" / "workers"
    (directory / "cut.json").write_bytes(good.model_dump_json().encode()[:40])
    (directory / "old.json").write_text('{"name": "old"}')
    (directory / "notes.txt").write_text("not a record")
    states, bad = read_states(tmp_path)
    assert states == [good]
    assert [path for path, _ in bad] == [directory / "cut.json", directory / "old.json"]
    assert all(why for _, why in bad)


def test_a_corrupt_state_record_is_reported_with_what_is_wrong(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "workers"
    directory.mkdir(parents=True)
    (directory / "cut.json").write_bytes(make_state("cut").model_dump_json().encode()[:40])
    (directory / "old.json").write_text('{"name": "old"}')
    _, bad = read_states(tmp_path)
    reasons = dict(bad)
    assert "Invalid JSON" in reasons[directory / "cut.json"]
    assert "worker_id" in reasons[directory / "old.json"]


def test_no_state_directory_means_no_records(tmp_path: Path) -> None:
    assert read_states(tmp_path / "fresh") == ([], [])


# -- log rotation ------------------------------------------------------------------------------
def test_a_log_under_the_limit_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    assert not rotate_log(log, max_bytes=10, backups=3)  # no log yet
    log.write_bytes(b"0123456789")
    assert not rotate_log(log, max_bytes=10, backups=3)
    assert log.read_bytes() == b"0123456789"
    assert not log.with_name("w.log.1").exists()


def test_rotation_copies_then_truncates_and_shifts_the_backups(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    for text in (b"first run\n", b"second run\n", b"third run\n"):
        log.write_bytes(text)
        assert rotate_log(log, max_bytes=4, backups=2)
        assert log.read_bytes() == b""
    assert log.with_name("w.log.1").read_bytes() == b"third run\n"
    assert log.with_name("w.log.2").read_bytes() == b"second run\n"
    assert not log.with_name("w.log.3").exists()


def test_a_writer_with_an_append_fd_writes_on_into_the_same_file_from_zero(
    tmp_path: Path,
) -> None:
    log = tmp_path / "w.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b"old line\n" * 10)
        inode = log.stat().st_ino
        assert rotate_log(log, max_bytes=50, backups=3)
        os.write(fd, b"new line\n")
        assert log.stat().st_ino == inode
        assert log.read_bytes() == b"new line\n"  # no hole of NULs where the old bytes were
        assert log.with_name("w.log.1").read_bytes() == b"old line\n" * 10
    finally:
        os.close(fd)


def test_a_spawned_worker_keeps_logging_into_the_rotated_log(
    spawned: Spawn, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "w.log"
    go = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('before rotation', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('after rotation', flush=True)\n"
    )
    proc = spawned(code, log=log)
    log_line(proc, log, "before rotation")
    assert rotate_log(log, max_bytes=0, backups=1)
    go.touch()
    assert proc.wait(timeout=20) == 0
    assert log.read_text() == "after rotation\n"
    assert log.with_name("w.log.1").read_text() == "--- hive: starting w ---\nbefore rotation\n"


# -- tail_lines -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "count", "lines"),
    [
        (b"a\nb\nc\n", 2, ["b", "c"]),
        (b"a\nb\nc\n", 3, ["a", "b", "c"]),
        (b"a\nb\nc\n", 10, ["a", "b", "c"]),  # shorter than asked
        (b"a\nb\nc", 2, ["b", "c"]),  # no trailing newline
        (b"a\nb\nc", 1, ["c"]),
        (b"a\r\nb\r\n", 1, ["b"]),
        (b"one line\n", 1, ["one line"]),
        (b"a\n\nb\n", 2, ["", "b"]),  # an empty line is a line
        (b"", 5, []),
        (b"a\nb\n", 0, []),
        (b"a\nb\n", -1, []),
        ("caf\u00e9\n".encode() + b"\xff\n", 2, ["caf\u00e9", "\ufffd"]),
    ],
)
def test_tail_lines(tmp_path: Path, content: bytes, count: int, lines: list[str]) -> None:
    path = tmp_path / "w.log"
    path.write_bytes(content)
    assert tail_lines(path, count) == lines


def test_tail_of_a_missing_file_or_a_directory_is_empty(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "missing.log", 10) == []
    assert tail_lines(tmp_path, 10) == []


def test_a_long_log_is_tailed_from_its_end(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    lines = [f"line {i:06d} " + "x" * (i % 50) for i in range(100_000)]
    path.write_text("\n".join(lines) + "\n")
    assert tail_lines(path, 5) == lines[-5:]
    assert tail_lines(path, 1000) == lines[-1000:]


def test_a_huge_sparse_log_is_read_from_its_end_only(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    with path.open("wb") as fh:
        fh.truncate(4 << 30)  # 4 GiB of hole: reading it all would take seconds and memory
        fh.seek(0, os.SEEK_END)
        fh.write(b"first\nsecond\nthird\n")
    assert tail_lines(path, 2) == ["second", "third"]


def test_max_bytes_bounds_what_is_read_and_keeps_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    lines = [f"line {i:05d}" for i in range(10_000)]  # 11 bytes a line with its newline
    path.write_text("\n".join(lines) + "\n")
    got = tail_lines(path, 10**6, max_bytes=8192)
    assert 0 < len(got) < len(lines)
    assert len(got) * 11 <= 8192 + 8192  # at most one block past the limit
    assert got == lines[-len(got) :]  # a suffix of whole lines: the cut one is dropped


_LINE = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    max_size=300,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(
    lines=st.lists(_LINE, max_size=80),
    trailing_newline=st.booleans(),
    count=st.integers(min_value=1, max_value=100),
)
def test_tail_lines_is_the_last_lines_of_the_file(
    tmp_path: Path, lines: list[str], trailing_newline: bool, count: int
) -> None:
    path = tmp_path / "prop.log"
    text = "\n".join(lines) + ("\n" if trailing_newline and lines else "")
    path.write_text(text, encoding="utf-8")
    expected = text.splitlines()[-count:]
    assert tail_lines(path, count) == expected


# -- stopping a group ------------------------------------------------------------------------------
@pytest.mark.parametrize("portable", [False, True], ids=["pidfd", "portable"])
def test_stop_group_terms_kills_sweeps_and_leaves_the_exit_status_to_the_parent(
    spawned: Spawn, tmp_path: Path, portable: bool
) -> None:
    """One stop for `hive stop-workers` and hive's own exit: SIGTERM, the grace, SIGKILL
    (said through on_kill), what the group left behind killed, the state record removed;
    a child of the caller is not reaped, so its parent still reads how it ended. The same
    with pidfds and with psutil only (`portable`: what macOS has)."""
    home = tmp_path / "home"
    leaves_child = (
        "import os, signal, subprocess, sys, time\n"
        "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    ignores_term = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    term_log, kill_log = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    polite = spawned(leaves_child, log=term_log, env={"HIVE_WORKER_ID": "w-a"})
    stubborn = spawned(ignores_term, log=kill_log, env={"HIVE_WORKER_ID": "w-b"})
    grandchild = int(log_line(polite, term_log, "child ").split()[1])
    log_line(stubborn, kill_log, "up")
    workers = []
    for name, proc in (("a", polite), ("b", stubborn)):
        state = make_state(name, pid=proc.pid, home=home).model_copy(
            update={"worker_id": f"w-{name}"}
        )
        write_state(home, state)
        workers.append(LiveWorker(state, psutil.Process(proc.pid), grace=0.5))
    killed: list[str] = []

    stuck = stop_group(
        workers, home=home, on_kill=lambda w: killed.append(w.state.name), portable=portable
    )

    assert stuck == []
    assert killed == ["b"]
    assert polite.poll() == -signal.SIGTERM  # not reaped by stop_group: the status is ours
    assert stubborn.poll() == -signal.SIGKILL
    assert read_states(home) == ([], [])

    def swept() -> bool:
        try:
            return psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    poll(swept, timeout=5, what="the child it left in its group killed")


def test_stop_group_kills_each_worker_at_its_own_grace(spawned: Spawn, tmp_path: Path) -> None:
    """Each worker gets its own grace, not the longest of the lot: the one with 0.5 s is
    SIGKILLed while the one with 10 s still has time. That one exits on its own (SIGUSR1,
    sent once the short one is dead), so it is never killed."""
    home = tmp_path / "home"
    ignores_term = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    procs, workers = {}, []
    for name, grace in (("long", 10.0), ("short", 0.5)):
        log = tmp_path / "logs" / f"{name}.log"
        proc = spawned(ignores_term, log=log, env={"HIVE_WORKER_ID": f"w-{name}"})
        log_line(proc, log, "up")
        state = make_state(name, pid=proc.pid, home=home).model_copy(
            update={"worker_id": f"w-{name}"}
        )
        write_state(home, state)
        procs[name] = proc
        workers.append(LiveWorker(state, psutil.Process(proc.pid), grace=grace))
    killed: list[str] = []
    long_alive_when_short_died: list[bool] = []

    def on_kill(worker: LiveWorker) -> None:
        killed.append(worker.state.name)
        if worker.state.name == "short":
            poll(lambda: procs["short"].poll() is not None, what="the short-grace worker dead")
            long_alive_when_short_died.append(procs["long"].poll() is None)
            with contextlib.suppress(ProcessLookupError):
                os.kill(procs["long"].pid, signal.SIGUSR1)

    stuck = stop_group(workers, home=home, on_kill=on_kill)

    assert stuck == []
    assert killed == ["short"]
    assert long_alive_when_short_died == [True]
    assert procs["short"].returncode == -signal.SIGKILL
    assert procs["long"].wait(timeout=10) == 0  # ended by itself, inside its grace
    assert read_states(home) == ([], [])


def test_stop_group_of_workers_already_gone_is_quick(spawned: Spawn, tmp_path: Path) -> None:
    proc = spawned("print('bye')")
    proc.wait(timeout=10)
    state = make_state("a", pid=proc.pid, home=tmp_path).model_copy(update={"worker_id": "x"})
    write_state(tmp_path, state)
    worker = LiveWorker(state, _gone_process(), grace=60)
    assert stop_group([worker], home=tmp_path) == []
    assert read_states(tmp_path) == ([], [])


def _gone_process() -> psutil.Process:
    """A psutil handle on a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(child.pid)
    child.wait()
    return handle
