"""The job operations that rbee's Queen and `rbee-keeper` POST to `/v1/jobs`, both
generations' names and fields, as one union discriminated by `operation`.

`parse_operation` turns a request body into one of them, or raises `BadRequest` with one
problem per bad field: its path, what was wrong, and what to send. Pure: which hive, which
model or worker a name means, is the job's business (hive/jobs/reads.py, writes.py and names.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails

from hive.errors import BadRequest
from hive.model.manifests import SOURCE_MAX_LENGTH
from hive.model.text import clip, show

_Op = ConfigDict(extra="forbid", frozen=True, strict=True)
#: The longest name, id or alias a job takes (a model id names a repository and a file).
_REF_MAX = 512
Ref = Annotated[str, Field(min_length=1, max_length=_REF_MAX)]
Pid = Annotated[int, Field(ge=1, le=2**31 - 1)]
#: A worker's device index (GPU-<n>), as rbee's `worker_spawn` sends it.
DeviceIndex = Annotated[int, Field(ge=0, le=999)]
ArgValue = int | float | str | bool


class _Job(BaseModel):
    model_config = _Op

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """A field is given or left out; `null` is refused (as rbee's serde would)."""
        if isinstance(data, dict):
            nulls = [clip(str(k), 40) for k, v in data.items() if v is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls[:5])}: null is not a value; leave it out")
        return data

    hive_id: Ref = Field(
        default="localhost",
        description=(
            "The hive the job is for, as the caller names it (this hive's id HIVE_HIVE_ID, "
            "`localhost`, or the caller's own alias for it; any name is taken as this hive "
            "and narrated)."
        ),
    )


class ModelList(_Job):
    """Every model: declared, on disk, or both (`model_list_entry` lines)."""

    operation: Literal["model_list"]


class _ModelRef(_Job):
    """A model named by rbee's `id` (current) or `model` (the seed's builder)."""

    id: Ref | None = None
    model: Ref | None = None

    def refs(self) -> list[str]:
        return [v for v in (self.id, self.model, getattr(self, "name", None)) if v is not None]

    @property
    def ref(self) -> str:
        return self.refs()[0]

    @model_validator(mode="after")
    def _one_ref(self) -> Self:
        fields = [f for f in ("id", "model", "name") if getattr(self, f, None) is not None]
        if len(fields) != 1:
            named = " or ".join(f"`{f}`" for f in ("id", "model", "name") if hasattr(self, f))
            raise ValueError(
                f"name the model with exactly one of {named} (got {', '.join(fields) or 'none'})"
            )
        return self


class ModelGet(_ModelRef):
    operation: Literal["model_get"]
    name: Ref | None = None


class ModelDelete(_ModelRef):
    operation: Literal["model_delete"]
    name: Ref | None = None


class ModelDownload(_Job):
    operation: Literal["model_download"]
    model: str = Field(
        min_length=1,
        max_length=SOURCE_MAX_LENGTH,
        description="hf://…, https://…, file:///… (under --file-roots), or a Hugging Face "
        "id: org/repo[:QUANT] (Q4_K_M when no quantization is named) or org/repo/file.gguf; "
        "`@revision` may follow.",
    )
    name: Ref | None = Field(default=None, description="The Model's name; default: from `model`.")


class ModelLoad(_ModelRef):
    """A worker for the model on `device` (rbee's current `model_load`)."""

    operation: Literal["model_load"]
    device: Ref = Field(default="cpu", description='"cpu", "cuda:0", "metal:0", CPU-0 or GPU-0.')
    runtime: Ref | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)


class ModelUnload(_ModelRef):
    """Stop the workers that serve the model."""

    operation: Literal["model_unload"]


class WorkerList(_Job):
    operation: Literal["worker_list", "worker_process_list"]


class _WorkerRef(_Job):
    pid: Pid | None = None
    name: Ref | None = None
    worker_id: Ref | None = None


class WorkerGet(_WorkerRef):
    operation: Literal["worker_get", "worker_process_get"]

    @model_validator(mode="after")
    def _one_ref(self) -> Self:
        given = [f for f in ("pid", "name", "worker_id") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                "name the worker with exactly one of `pid`, `name` or `worker_id` (got "
                f"{', '.join(given) or 'none'})"
            )
        return self


class WorkerSpawn(_Job):
    operation: Literal["worker_spawn"]
    model: Ref = Field(description="A Model's name (or the id it was downloaded as).")
    worker: Literal["cpu", "cuda", "metal"]
    device: DeviceIndex = 0
    count: int = Field(default=1, ge=1, le=100)
    name: Ref | None = Field(default=None, description="Default: from the model and device.")
    runtime: Ref | None = Field(
        default=None, description="A worker catalog entry; default: the first of `worker`'s type."
    )
    port: int | None = Field(default=None, ge=1024, le=65535)
    args: dict[Annotated[str, Field(max_length=64)], ArgValue] = Field(default_factory=dict)
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = Field(
        default=None,
        description="hive's addition: the Worker's spec.restartPolicy (default Always).",
    )


class WorkerKill(_WorkerRef):
    operation: Literal["worker_kill", "worker_delete", "worker_process_delete"]
    pids: list[Pid] | None = Field(default=None, max_length=1000)
    names: list[Ref] | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _some_ref(self) -> Self:
        if not self.targets():
            raise ValueError("name the worker(s): `pid`, `pids`, `name`, `names` or `worker_id`")
        return self

    def targets(self) -> list[int | str]:
        out: list[int | str] = []
        out += [p for p in (self.pid, *(self.pids or ())) if p is not None]
        out += [n for n in (self.name, self.worker_id, *(self.names or ())) if n is not None]
        return out


class DeviceList(_Job):
    operation: Literal["device_list"]


class DeviceGet(_Job):
    operation: Literal["device_get"]
    device_id: DeviceIndex | Ref | None = Field(
        default=None, description="CPU-0, GPU-0, or a GPU's index."
    )
    id: DeviceIndex | Ref | None = None

    @property
    def ref(self) -> int | str:
        value = self.device_id if self.device_id is not None else self.id
        assert value is not None
        return value

    @model_validator(mode="after")
    def _one_ref(self) -> Self:
        if (self.device_id is None) == (self.id is None):
            raise ValueError("name the device with exactly one of `device_id` or `id`")
        return self


class HiveStatus(_Job):
    operation: Literal["hive_status"]


class HiveCheck(_Job):
    """rbee's narration check: a few lines through the job stream, then [DONE]."""

    operation: Literal["hive_check"]
    alias: Ref = "localhost"


Operation = Annotated[
    ModelList
    | ModelGet
    | ModelDownload
    | ModelDelete
    | ModelLoad
    | ModelUnload
    | WorkerList
    | WorkerGet
    | WorkerSpawn
    | WorkerKill
    | DeviceList
    | DeviceGet
    | HiveStatus
    | HiveCheck,
    Field(discriminator="operation"),
]
OPERATION_TYPES: tuple[type[_Job], ...] = (
    ModelList,
    ModelGet,
    ModelDownload,
    ModelDelete,
    ModelLoad,
    ModelUnload,
    WorkerList,
    WorkerGet,
    WorkerSpawn,
    WorkerKill,
    DeviceList,
    DeviceGet,
    HiveStatus,
    HiveCheck,
)


def operation_names(cls: type[_Job]) -> tuple[str, ...]:
    """The `operation` values `cls` takes (both generations' names)."""
    annotation = cls.model_fields["operation"].annotation
    return tuple(getattr(annotation, "__args__", ()))


#: Every operation name, and the type that takes it.
OPERATIONS: dict[str, type[_Job]] = {
    name: cls for cls in OPERATION_TYPES for name in operation_names(cls)
}
_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)


def parse_operation(body: bytes) -> Operation:
    """The operation in a `POST /v1/jobs` body; BadRequest naming every bad field."""
    try:
        return _ADAPTER.validate_json(body)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)[:20]]
        raise BadRequest(problems[0], problems) from None


def _problem(error: ErrorDetails) -> str:
    """One finding: `path: what is wrong (got …); what to send`."""
    loc = list(error["loc"])
    kind = error["type"]
    if kind == "json_invalid":
        return f"the body is not JSON ({clip(error['msg'], 120)}); send a JSON object"
    if kind in ("union_tag_not_found", "model_attributes_type", "dict_type") and not loc:
        return (
            "operation: missing; send a JSON object with `operation`, one of: "
            f"{', '.join(OPERATIONS)}"
        )
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag", "")
        return (
            f"operation: {show(tag, 60)} is not an operation this hive runs; send one of: "
            f"{', '.join(OPERATIONS)}"
        )
    operation = str(loc.pop(0)) if loc else ""
    cls = OPERATIONS.get(operation)
    path = ".".join(clip(str(part), 60) for part in loc) or "(body)"
    fields = ", ".join(f for f in cls.model_fields if f != "operation") if cls else ""
    if kind == "missing":
        return f"{path}: missing; {operation} needs it (its fields: {fields})"
    if kind == "extra_forbidden":
        return f"{path}: not a field of {operation}; send only: operation, {fields}"
    got = f" (got {show(error.get('input'), 60)})" if kind != "value_error" else ""
    message = clip(str(error["msg"]).removeprefix("Value error, "), 300)
    return f"{path}: {message}{got}"


def example(cls: type[_Job]) -> dict[str, Any]:
    """The smallest body `cls` takes (for the docs and tests)."""
    return {"operation": operation_names(cls)[0], "hive_id": "localhost"}
