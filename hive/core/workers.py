"""Pure worker logic: a runtime entry rendered into argv and env for one Worker record,
the hash that says when a running worker no longer matches its record, and the restart
policy with CrashLoopBackOff."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from hive.core.backoff import backoff_delay
from hive.errors import PermanentError
from hive.model.manifests import WorkerSpec
from hive.model.runtimes import ArgValue, RuntimeEntry, arg_problem, render_value
from hive.model.text import clip
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


class ArgAdjustment(BaseModel):
    """An arg hive runs with another value than the record (or the entry's default) asks,
    and why: shown as a warning and as the worker's `ArgsAdjusted` condition."""

    model_config = ConfigDict(frozen=True)

    arg: str
    #: CamelCase, for the condition: ContextAboveTrained, NoGpuToOffload.
    reason: str
    asked: ArgValue
    used: ArgValue
    #: False when `asked` is the entry's default (the record does not set the arg).
    from_record: bool
    why: str

    def describe(self) -> str:
        asked = clip(render_value(self.asked), 40)
        asked = asked if self.from_record else f"{asked} (the runtime's default)"
        return f"{self.arg}: asked {asked}, using {clip(render_value(self.used), 40)} ({self.why})"


def adjust_args(
    entry: RuntimeEntry,
    args: dict[str, ArgValue],
    *,
    given: Mapping[str, ArgValue],
    device: str,
    context_length: int | None,
) -> tuple[dict[str, ArgValue], tuple[ArgAdjustment, ...]]:
    """The args a worker runs with (`args`, as `resolve_args` made them) after the rules
    of its device and model, and every change to what was asked:

    - a GPU offload arg (one whose entry sets `cpu_value`) takes that value on a CPU
      device; said only when the record asked for another value (the entry's default is
      the GPU's, not the user's wish);
    - `ctx_size` above the model's trained context (`context_length` of its GGUF header)
      is lowered to it, as llama.cpp would do silently."""
    used = dict(args)
    changes = []
    on_cpu = not device.startswith("GPU-")
    for key, spec in sorted(entry.args.items()):
        if on_cpu and spec.cpu_value is not None and used.get(key) != spec.cpu_value:
            if key in given:
                changes.append(
                    ArgAdjustment(
                        arg=key,
                        reason="NoGpuToOffload",
                        asked=used[key],
                        used=spec.cpu_value,
                        from_record=True,
                        why=f"{device} is not a GPU: nothing to offload to",
                    )
                )
            used[key] = spec.cpu_value
    ctx = used.get("ctx_size")
    if (
        context_length
        and isinstance(ctx, int)
        and not isinstance(ctx, bool)
        and ctx > context_length
    ):
        changes.append(
            ArgAdjustment(
                arg="ctx_size",
                reason="ContextAboveTrained",
                asked=ctx,
                used=context_length,
                from_record="ctx_size" in given,
                why=f"the model was trained with a context of {context_length} tokens",
            )
        )
        used["ctx_size"] = context_length
    return used, tuple(changes)


def adjustments_condition(changes: tuple[ArgAdjustment, ...]) -> tuple[str, str] | None:
    """The `ArgsAdjusted` condition's reason and message (`ctx_size: asked 512, using 256
    (…); …`), or None when nothing was changed."""
    if not changes:
        return None
    reasons = sorted({change.reason for change in changes})
    reason = reasons[0] if len(reasons) == 1 else "SeveralArgs"
    return reason, "; ".join(change.describe() for change in changes)


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
