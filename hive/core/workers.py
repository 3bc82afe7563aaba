"""Pure worker logic: a runtime entry rendered into argv and env for one Worker record,
the hash that says when a running worker no longer matches its record, and the restart
policy with CrashLoopBackOff."""

from __future__ import annotations

import hashlib
import json

from hive.core.backoff import backoff_delay
from hive.errors import PermanentError
from hive.model.manifests import WorkerSpec
from hive.model.runtimes import ArgValue, RuntimeEntry, arg_problem, render_value
from hive.model.workers import ExitInfo


class InvalidArgs(PermanentError):
    reason = "InvalidArgs"


def resolve_args(entry: RuntimeEntry, given: dict[str, ArgValue]) -> dict[str, ArgValue]:
    """The record's args over the entry's defaults; every problem at once, with a hint."""
    problems = []
    for key in sorted(set(given) - set(entry.args)):
        declared = ", ".join(sorted(entry.args)) or "none"
        problems.append(f"args.{key}: runtime {entry.id} does not declare it (it has: {declared})")
    for key, value in sorted(given.items()):
        spec = entry.args.get(key)
        if spec is not None and (problem := arg_problem(spec, value)):
            problems.append(f"args.{key}: {value!r} {problem}")
    if problems:
        raise InvalidArgs("; ".join(problems))
    return {key: given.get(key, spec.default) for key, spec in entry.args.items()}


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


def render_command(
    entry: RuntimeEntry, *, args: dict[str, ArgValue], builtins: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """argv and the entry's env, with every placeholder filled in."""
    values = {**builtins, **{k: render_value(v) for k, v in args.items()}}
    argv = [render(part, values) for part in entry.argv]
    env = {key: render(value, values) for key, value in entry.env.items()}
    return argv, env


def cuda_visible_devices(device: str) -> str:
    """`GPU-1` → `1`; `CPU-0` → empty (no GPU visible to the worker)."""
    return device.removeprefix("GPU-") if device.startswith("GPU-") else ""


def spec_hash(spec: WorkerSpec, *, model_sha256: str | None) -> str:
    """What a running worker must match: a change means stop, then start (a replace).
    The restart policy, the desired state and the selector are left out: changing them
    does not need a new process."""
    identity = {
        "model": spec.model,
        "model_sha256": model_sha256,
        "runtime": spec.runtime,
        "device": spec.device,
        "port": spec.port,
        "args": spec.args,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def restart_wanted(policy: str, exit: ExitInfo) -> bool:
    """Kubernetes' rules: Always restarts, OnFailure restarts after a failure, Never never."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit.failed
    return False


def crashloop_delay(consecutive_failures: int, *, base: float = 10.0, cap: float = 300.0) -> float:
    """CrashLoopBackOff: base (10 s) after the first failure, doubling to cap (300 s)."""
    return backoff_delay(consecutive_failures, base=base, cap=cap)
