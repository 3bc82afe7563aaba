"""Worker catalog entries: how to run one kind of inference process.

A Worker record names an entry by id; hive renders the entry's argv template with the
record's declared args. Commands never come from a manifest or a request.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hive.model.ids import NAME_PATTERN

ArgValue = int | float | str | bool
WorkerType = Literal["cpu", "cuda", "metal", "vulkan", "rocm"]

#: Placeholders hive fills in for every entry; declared args add their own names.
BUILT_IN_PLACEHOLDERS = frozenset(
    {
        "model_path",  # the model's GGUF file (the first part of a split model)
        "model",  # the Model's name, which the worker serves it as
        "host",
        "port",
        "device",  # CPU-0 or GPU-<n>
        "worker_id",
        "queen_url",  # empty when hive knows no Queen
        "python",  # the interpreter hive runs on (for runtimes written in Python)
        "binary",  # the entry's binary: `path` in its metadata.json
        "entry_dir",  # the directory of the entry's metadata.json
    }
)


class ArgSpec(BaseModel):
    """One argument a Worker record may set, with its type, default and bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["int", "float", "str", "bool"]
    default: ArgValue
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""
    #: The value on a CPU device, whatever the record asks: set for an arg that offloads
    #: work to a GPU (`n_gpu_layers`: 0), so a CPU worker is never given a GPU offload.
    cpu_value: ArgValue | None = None

    @model_validator(mode="after")
    def _default_fits(self) -> Self:
        problem = arg_problem(self, self.default)
        if problem:
            raise ValueError(f"default {self.default!r} {problem}")
        if self.cpu_value is not None and (problem := arg_problem(self, self.cpu_value)):
            raise ValueError(f"cpu_value {self.cpu_value!r} {problem}")
        return self


def render_value(value: ArgValue) -> str:
    """An arg as it appears on a command line: booleans as `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def arg_problem(spec: ArgSpec, value: ArgValue) -> str | None:
    """Why `value` does not fit `spec`, or None."""
    expected: dict[str, tuple[type, ...]] = {
        "int": (int,),
        "float": (int, float),
        "str": (str,),
        "bool": (bool,),
    }
    if isinstance(value, bool) and spec.type != "bool":
        return f"is a boolean; expected {spec.type}"
    if not isinstance(value, expected[spec.type]):
        return f"is {type(value).__name__}; expected {spec.type}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return "is not a finite number"
        if spec.min is not None and value < spec.min:
            return f"is below the minimum {spec.min:g}"
        if spec.max is not None and value > spec.max:
            return f"is above the maximum {spec.max:g}"
    if spec.choices is not None and render_value(value) not in spec.choices:
        return f"is not one of {', '.join(spec.choices)}"
    return None


class RuntimeEntry(BaseModel):
    """A catalog entry: built in, or read from `<home>/workers/<id>/metadata.json`.

    The rbee fields (`id`, `worker_type`, `path`, `version`) come first; hive adds the
    argv template, the declared args and how to check health.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=NAME_PATTERN, max_length=63)
    name: str = ""
    worker_type: WorkerType = "cpu"
    version: str | None = None
    #: The binary (rbee layout): relative paths resolve against the entry's directory.
    path: Path | None = None
    argv: tuple[str, ...] = Field(min_length=1)
    args: dict[str, ArgSpec] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    health_path: str = Field(default="/health", pattern=r"^/")
    #: Prometheus text endpoint of the worker, scraped into its status; None: none.
    metrics_path: str | None = Field(default=None, pattern=r"^/")
    grace_seconds: float = Field(default=10.0, gt=0, le=600)
    start_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    description: str = ""
    #: "built-in", or the metadata.json the entry was read from.
    origin: str = "built-in"
    #: False when the entry is well formed but cannot run here (its binary is missing).
    available: bool = True
    unavailable_reason: str | None = None

    @model_validator(mode="after")
    def _placeholders_known(self) -> Self:
        known = BUILT_IN_PLACEHOLDERS | set(self.args)
        clash = BUILT_IN_PLACEHOLDERS & set(self.args)
        if clash:
            raise ValueError(f"args {sorted(clash)} shadow hive's own placeholders")
        for text in (*self.argv, *self.env.values()):
            for field in placeholders(text):
                if field not in known:
                    raise ValueError(
                        f"placeholder {{{field}}} in {text!r} is neither hive's "
                        f"({', '.join(sorted(BUILT_IN_PLACEHOLDERS))}) nor a declared arg"
                    )
        return self


def placeholders(text: str) -> list[str]:
    """The `{names}` in a template, those nested in a format spec (`{port:{width}}`) too;
    ValueError for a malformed one."""
    found = []
    for _, field, spec, _ in string.Formatter().parse(text):
        if field is not None:
            found.append(field)
        if spec:
            found.extend(placeholders(spec))
    return found
