"""What a job's words mean in hive's terms, pure: a model reference as a Model source
(`hf://…`) and a Model name, a worker type and device index as a device (`GPU-0`), and
the names hive gives the Worker records a job declares."""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urlsplit

from hive.errors import BadRequest
from hive.model.ids import NAME_MAX_LENGTH, name_problem
from hive.model.text import show

#: The quantization llama.cpp's `-hf org/repo` picks when none is named.
DEFAULT_QUANT = "Q4_K_M"
_SCHEMES = ("hf://", "https://", "http://", "file:")
#: A bare Hugging Face id: org/repo, org/repo:QUANT, org/repo/path/file.gguf; @revision.
_BARE_HF = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:(?P<path>/[^@:]+)|:(?P<quant>[\w.-]+))?"
    r"(?P<rev>@[\w./-]+)?"
)
_NOT_NAME = re.compile(r"[^a-z0-9.-]+")


def source_of(model: str) -> str:
    """The Model source of `model_download`'s `model`: a source as written, or a bare Hugging
    Face id as hf:// (org/repo alone: its Q4_K_M file, as llama.cpp picks it)."""
    if model.startswith(_SCHEMES):
        return model
    match = _BARE_HF.fullmatch(model)
    if match is None:
        raise BadRequest(
            f"model: {show(model, 80)} is neither a source (hf://, https://, file:) nor a "
            "Hugging Face id (org/repo, org/repo:QUANT or org/repo/file.gguf)"
        )
    rest = match["path"] or f":{match['quant'] or DEFAULT_QUANT}"
    return f"hf://{match['repo']}{rest}{match['rev'] or ''}"


def _slug(text: str) -> str:
    return _NOT_NAME.sub("-", text.lower()).strip("-.")


def model_name_of(model: str) -> str:
    """A Model name for `model` (a source or an id): the GGUF file's stem, or the
    repository and its quantization; '' when nothing usable is left."""
    if model.startswith(("https://", "http://")):
        # The path alone: a name must never take a password or a token from the user
        # info (`https://user:token@host/…`: its `@` is no revision), the query or the
        # fragment.
        try:
            rest = urlsplit(model).path.rstrip("/")
        except ValueError:
            return ""
    else:
        rest = model
        for scheme in _SCHEMES:
            rest = rest.removeprefix(scheme)
        rest = rest.split("?", 1)[0].split("#", 1)[0].split("@", 1)[0].rstrip("/")
    last = rest.rsplit("/", 1)[-1]
    if last.lower().endswith(".gguf"):
        stem = re.sub(r"-\d{5}-of-\d{5}$", "", last[: -len(".gguf")], flags=re.IGNORECASE)
        name = _slug(stem)
    elif ":" in last:
        repo, quant = last.split(":", 1)
        name = _slug(f"{repo.removesuffix('-GGUF').removesuffix('-gguf')}-{quant}")
    else:
        name = _slug(last.removesuffix("-GGUF").removesuffix("-gguf"))
    name = name.replace("..", ".")
    return name[:NAME_MAX_LENGTH].rstrip("-.")


def model_names(ref: str) -> list[str]:
    """The Model names a job's model reference may mean, most likely first: the reference
    itself when it is a name, then the name a download of it was given."""
    out = [ref] if name_problem(ref) is None else []
    derived = model_name_of(ref)
    if derived and derived not in out and name_problem(derived) is None:
        out.append(derived)
    return out


def device_of(worker: str, index: int) -> str:
    """rbee's worker type and device index as a hive device: cpu → CPU-0, else GPU-<n>."""
    if worker == "cpu":
        if index != 0:
            raise BadRequest(f"device: a cpu worker runs on device 0 (CPU-0), got {index}")
        return "CPU-0"
    return f"GPU-{index}"


_DEVICE = re.compile(r"(?P<type>cpu|cuda|metal|gpu)(?::(?P<index>\d{1,3}))?", re.IGNORECASE)
_HIVE_DEVICE = re.compile(r"(?P<type>CPU|GPU)-(?P<index>\d{1,3})")


def parse_device(text: str) -> tuple[str, str]:
    """`model_load`'s device ("cpu", "cuda:0", "metal:1", CPU-0, GPU-0) as (worker type,
    hive device)."""
    if (match := _HIVE_DEVICE.fullmatch(text)) is not None:
        index = int(match["index"])
        return (
            ("cpu", device_of("cpu", index)) if match["type"] == "CPU" else ("cuda", f"GPU-{index}")
        )
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise BadRequest(
            f'device: {show(text, 40)} is not a device; send "cpu", "cuda:<n>", "metal:<n>", '
            "CPU-0 or GPU-<n>"
        )
    kind = match["type"].lower()
    kind = "cuda" if kind == "gpu" else kind
    return kind, device_of(kind, int(match["index"] or 0))


def worker_names(base: str, count: int, *, taken: Collection[str]) -> list[str]:
    """`count` Worker names from `base` (a valid name) that none of `taken` has: `base`,
    then `base-2`, `base-3`, … (cut to fit 63 characters)."""
    out: list[str] = []
    n = 1
    while len(out) < count:
        suffix = "" if n == 1 else f"-{n}"
        name = base[: NAME_MAX_LENGTH - len(suffix)].rstrip("-.") + suffix
        if name not in taken and name not in out:
            out.append(name)
        n += 1
    return out


def worker_base(model: str, device: str) -> str:
    """The name a job gives a worker of `model` on `device`: `tiny-gpu-0`."""
    return f"{model[: NAME_MAX_LENGTH - 8].rstrip('-.')}-{device.lower()}"
