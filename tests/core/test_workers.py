"""Pure worker logic: args checked against the runtime entry, the command rendered, the
hash that decides a replace, and the restart policy with CrashLoopBackOff."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.core.workers import (
    InvalidArgs,
    adjust_args,
    adjustments_condition,
    crashloop_delay,
    cuda_visible_devices,
    render_command,
    resolve_args,
    restart_wanted,
    spec_hash,
)
from hive.errors import PermanentError
from hive.model.manifests import LabelSelector, WorkerSpec
from hive.model.runtimes import ArgSpec, ArgValue, RuntimeEntry
from hive.model.workers import ExitInfo

ENTRY = RuntimeEntry(
    id="scripted",
    argv=(
        "{python}",
        "worker.py",
        "--port",
        "{port}",
        "--mode",
        "{mode}",
        "--delay",
        "{delay}",
        "--child={child}",
        "--n",
        "{n}",
    ),
    args={
        "mode": ArgSpec(type="str", default="serve", choices=("serve", "crash")),
        "delay": ArgSpec(type="float", default=0.0, min=0, max=60),
        "child": ArgSpec(type="bool", default=False),
        "n": ArgSpec(type="int", default=4, min=1, max=8),
    },
    env={"WORKER_MODE": "{mode}", "WORKER_URL": "http://{host}:{port}/", "FIXED": "1"},
)
BUILTINS = {"python": "/usr/bin/python3", "port": "9001", "host": "127.0.0.1"}
AT = datetime(2025, 1, 1, tzinfo=UTC)


# -- resolve_args ----------------------------------------------------------------------------
def test_defaults_fill_what_the_record_leaves_out() -> None:
    assert resolve_args(ENTRY, {}) == {"mode": "serve", "delay": 0.0, "child": False, "n": 4}
    assert resolve_args(ENTRY, {"n": 8, "child": True}) == {
        "mode": "serve",
        "delay": 0.0,
        "child": True,
        "n": 8,
    }


def test_an_undeclared_arg_is_named_with_what_the_runtime_declares() -> None:
    with pytest.raises(InvalidArgs) as caught:
        resolve_args(ENTRY, {"threads": 4})
    assert str(caught.value) == (
        "args.threads: runtime scripted does not declare it (it has: child, delay, mode, n)"
    )
    assert isinstance(caught.value, PermanentError)
    assert caught.value.reason == "InvalidArgs"


def test_a_runtime_without_args_says_it_has_none() -> None:
    bare = RuntimeEntry(id="bare", argv=("{binary}",))
    with pytest.raises(
        InvalidArgs, match=r"^args\.x: runtime bare does not declare it \(it has: none\)$"
    ):
        resolve_args(bare, {"x": 1})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n": 0}, "args.n: 0 is below the minimum 1"),
        ({"n": 9}, "args.n: 9 is above the maximum 8"),
        ({"n": True}, "args.n: True is a boolean; expected int"),
        ({"n": "4"}, "args.n: '4' is str; expected int"),
        ({"delay": -0.5}, "args.delay: -0.5 is below the minimum 0"),
        ({"mode": "fly"}, "args.mode: 'fly' is not one of serve, crash"),
        ({"child": "yes"}, "args.child: 'yes' is str; expected bool"),
    ],
)
def test_a_bad_value_says_which_arg_and_why(given: dict[str, ArgValue], message: str) -> None:
    with pytest.raises(InvalidArgs) as caught:
        resolve_args(ENTRY, given)
    assert str(caught.value) == message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgs) as caught:
        resolve_args(ENTRY, {"zeta": 1, "alpha": 2, "n": 100, "mode": 3})
    assert str(caught.value) == "; ".join(
        [
            "args.alpha: runtime scripted does not declare it (it has: child, delay, mode, n)",
            "args.zeta: runtime scripted does not declare it (it has: child, delay, mode, n)",
            "args.mode: 3 is int; expected str",
            "args.n: 100 is above the maximum 8",
        ]
    )


# -- render_command ----------------------------------------------------------------------------
def test_the_command_is_rendered_with_builtins_and_args() -> None:
    args = resolve_args(ENTRY, {"child": True, "delay": 1.5, "mode": "crash"})
    argv, env = render_command(ENTRY, args=args, builtins=BUILTINS)
    assert argv == [
        "/usr/bin/python3",
        "worker.py",
        "--port",
        "9001",
        "--mode",
        "crash",
        "--delay",
        "1.5",
        "--child=true",
        "--n",
        "4",
    ]
    assert env == {"WORKER_MODE": "crash", "WORKER_URL": "http://127.0.0.1:9001/", "FIXED": "1"}


def test_a_false_bool_is_rendered_false() -> None:
    argv, _ = render_command(ENTRY, args=resolve_args(ENTRY, {}), builtins=BUILTINS)
    assert "--child=false" in argv


@given(st.text())
def test_an_arg_value_is_passed_verbatim_never_expanded_again(value: str) -> None:
    entry = RuntimeEntry(
        id="echo", argv=("{binary}", "{text}"), args={"text": ArgSpec(type="str", default="")}
    )
    argv, _ = render_command(entry, args={"text": value}, builtins={"binary": "/bin/echo"})
    assert argv == ["/bin/echo", value]


# -- args adjusted to the device and the model ---------------------------------------------------
LLAMA = RuntimeEntry(
    id="llama",
    argv=("srv", "--ctx-size", "{ctx_size}", "--n-gpu-layers", "{n_gpu_layers}"),
    args={
        "ctx_size": ArgSpec(type="int", default=0, min=0),
        "n_gpu_layers": ArgSpec(type="int", default=999, min=0, max=999, cpu_value=0),
    },
)


@pytest.mark.parametrize(
    ("given", "device", "trained", "used", "condition"),
    [
        # Nothing asked beyond what the model and device allow: nothing said.
        ({}, "GPU-0", 256, {"ctx_size": 0, "n_gpu_layers": 999}, None),
        ({"ctx_size": 256}, "GPU-0", 256, {"ctx_size": 256, "n_gpu_layers": 999}, None),
        ({"ctx_size": 512}, "GPU-0", None, {"ctx_size": 512, "n_gpu_layers": 999}, None),
        # A CPU worker never gets a GPU offload; the entry's default is not the user's wish.
        ({}, "CPU-0", 256, {"ctx_size": 0, "n_gpu_layers": 0}, None),
        ({"n_gpu_layers": 0}, "CPU-0", 256, {"ctx_size": 0, "n_gpu_layers": 0}, None),
        (
            {"n_gpu_layers": 20},
            "CPU-0",
            256,
            {"ctx_size": 0, "n_gpu_layers": 0},
            (
                "NoGpuToOffload",
                "n_gpu_layers: asked 20, using 0 (CPU-0 is not a GPU: nothing to offload to)",
            ),
        ),
        # A context above the trained one is lowered to it, and said.
        (
            {"ctx_size": 512},
            "CPU-0",
            256,
            {"ctx_size": 256, "n_gpu_layers": 0},
            (
                "ContextAboveTrained",
                "ctx_size: asked 512, using 256 (the model was trained with a context of "
                "256 tokens)",
            ),
        ),
        (
            {"ctx_size": 512, "n_gpu_layers": 10},
            "CPU-0",
            256,
            {"ctx_size": 256, "n_gpu_layers": 0},
            (
                "SeveralArgs",
                "n_gpu_layers: asked 10, using 0 (CPU-0 is not a GPU: nothing to offload to); "
                "ctx_size: asked 512, using 256 (the model was trained with a context of "
                "256 tokens)",
            ),
        ),
    ],
)
def test_args_adjusted_to_the_device_and_the_model(
    given: dict[str, ArgValue],
    device: str,
    trained: int | None,
    used: dict[str, ArgValue],
    condition: tuple[str, str] | None,
) -> None:
    args = resolve_args(LLAMA, given)
    result, changes = adjust_args(LLAMA, args, given=given, device=device, context_length=trained)
    assert result == used
    assert adjustments_condition(changes) == condition
    argv, _ = render_command(LLAMA, args=result, builtins={})
    assert argv[2] == str(used["ctx_size"]) and argv[4] == str(used["n_gpu_layers"])


def test_an_entry_default_above_the_trained_context_is_said_as_the_default() -> None:
    entry = LLAMA.model_copy(
        update={"args": {**LLAMA.args, "ctx_size": ArgSpec(type="int", default=4096)}}
    )
    _, changes = adjust_args(
        entry, resolve_args(entry, {}), given={}, device="GPU-0", context_length=2048
    )
    assert adjustments_condition(changes) == (
        "ContextAboveTrained",
        "ctx_size: asked 4096 (the runtime's default), using 2048 (the model was trained "
        "with a context of 2048 tokens)",
    )


def test_a_cpu_value_outside_the_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_value 5 is above the maximum 1"):
        ArgSpec(type="int", default=0, max=1, cpu_value=5)


# -- cuda_visible_devices -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "visible"),
    [("GPU-0", "0"), ("GPU-1", "1"), ("GPU-12", "12"), ("CPU-0", "")],
)
def test_cuda_visible_devices(device: str, visible: str) -> None:
    assert cuda_visible_devices(device) == visible


# -- spec_hash --------------------------------------------------------------------------------
BASE: dict[str, Any] = {
    "model": "tiny",
    "runtime": "llama-cpp",
    "device": "CPU-0",
    "port": 9100,
    "args": {"ctx_size": 256, "parallel": 2},
}


def _hash(sha: str | None = "ab" * 32, **changes: Any) -> str:
    return spec_hash(WorkerSpec(**{**BASE, **changes}), model_sha256=sha)


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "other"},
        {"runtime": "llama-server"},
        {"device": "GPU-0"},
        {"port": 9101},
        {"port": None},
        {"args": {"ctx_size": 512, "parallel": 2}},
        {"args": {"ctx_size": 256}},
        {"args": {"ctx_size": 256, "parallel": 2, "threads": 4}},
        {"args": {"ctx_size": 256.0, "parallel": 2}},
        {"args": {"ctx_size": "256", "parallel": 2}},
        {"sha": "cd" * 32},
        {"sha": None},
    ],
    ids=lambda c: ",".join(c),
)
def test_the_hash_changes_with_what_the_process_runs(changes: dict[str, Any]) -> None:
    assert _hash(**changes) != _hash()


@pytest.mark.parametrize(
    "changes",
    [
        {"restartPolicy": "Never"},
        {"restartPolicy": "OnFailure"},
        {"state": "stopped"},
        {"hiveSelector": LabelSelector(matchLabels={"gpu": "yes"})},
        {"args": {"parallel": 2, "ctx_size": 256}},  # the same args, in another order
    ],
    ids=lambda c: ",".join(c),
)
def test_the_hash_ignores_what_needs_no_new_process(changes: dict[str, Any]) -> None:
    assert _hash(**changes) == _hash()


def test_the_hash_is_short_hex_and_stable() -> None:
    value = _hash()
    assert len(value) == 16
    int(value, 16)
    assert value == _hash()


def test_a_bool_arg_and_an_int_arg_hash_differently() -> None:
    assert _hash(args={"flag": True}) != _hash(args={"flag": 1})


# -- ExitInfo --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exit", "failed", "text"),
    [
        (ExitInfo(at=AT, code=0), False, "exit code 0"),
        (ExitInfo(at=AT, code=1), True, "exit code 1"),
        (ExitInfo(at=AT, code=3), True, "exit code 3"),
        (ExitInfo(at=AT, signal=signal.SIGKILL), True, "killed by SIGKILL"),
        (ExitInfo(at=AT, signal=signal.SIGTERM), True, "killed by SIGTERM"),
        (ExitInfo(at=AT, signal=99), True, "killed by signal 99"),
        (ExitInfo(at=AT, code=0, reason="Unhealthy"), True, "exit code 0"),
        (ExitInfo(at=AT, code=0, reason="StartTimeout"), True, "exit code 0"),
        (
            ExitInfo(at=AT),
            True,
            "exit status unknown (adopted process, not hive's child)",
        ),
    ],
)
def test_exit_failed_and_describe(exit: ExitInfo, failed: bool, text: str) -> None:
    assert exit.failed is failed
    assert exit.describe() == text


# -- restart_wanted ------------------------------------------------------------------------------
CLEAN = ExitInfo(at=AT, code=0)
ERROR = ExitInfo(at=AT, code=1)
KILLED = ExitInfo(at=AT, signal=signal.SIGKILL)
UNHEALTHY = ExitInfo(at=AT, code=0, reason="Unhealthy", message="/health answered 503")
UNKNOWN = ExitInfo(at=AT)


@pytest.mark.parametrize(
    ("policy", "exit", "restart"),
    [
        ("Always", CLEAN, True),
        ("Always", ERROR, True),
        ("Always", KILLED, True),
        ("Always", UNHEALTHY, True),
        ("Always", UNKNOWN, True),
        ("OnFailure", CLEAN, False),
        ("OnFailure", ERROR, True),
        ("OnFailure", KILLED, True),
        ("OnFailure", UNHEALTHY, True),
        ("OnFailure", UNKNOWN, True),
        ("Never", CLEAN, False),
        ("Never", ERROR, False),
        ("Never", KILLED, False),
        ("Never", UNHEALTHY, False),
        ("Never", UNKNOWN, False),
    ],
)
def test_restart_wanted(policy: str, exit: ExitInfo, restart: bool) -> None:
    assert restart_wanted(policy, exit) is restart


# -- crashloop_delay -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0), (5, 160.0), (6, 300.0), (50, 300.0)],
)
def test_crashloop_delay(failures: int, delay: float) -> None:
    assert crashloop_delay(failures) == delay


@given(st.integers(min_value=0, max_value=10**9))
def test_crashloop_delay_never_shrinks_and_stays_under_the_cap(failures: int) -> None:
    now, after = crashloop_delay(failures), crashloop_delay(failures + 1)
    assert now <= after <= 300.0
    assert after >= 10.0


@given(
    failures=st.integers(min_value=1, max_value=10**6),
    base=st.floats(min_value=0.1, max_value=100),
    cap=st.floats(min_value=100, max_value=10_000),
)
def test_crashloop_delay_respects_base_and_cap(failures: int, base: float, cap: float) -> None:
    delay = crashloop_delay(failures, base=base, cap=cap)
    assert base <= delay <= cap
    assert crashloop_delay(failures + 1, base=base, cap=cap) >= delay
