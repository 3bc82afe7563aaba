"""A hive's own labels: what `--label key=value`, `HIVE_LABELS` and `--labels` give, checked
by the manifests' label rules; `hive.name` and `hive.hostname` are hive's to set."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import TypeAdapter, ValidationError

from hive.model.manifests import LabelKey, LabelValue
from hive.model.text import show

#: The labels hive sets itself: its id and this machine's hostname.
NAME_LABEL = "hive.name"
HOSTNAME_LABEL = "hive.hostname"
#: Keys under this prefix are hive's own; a user label may not set them.
RESERVED_PREFIX = "hive."
_KEY: TypeAdapter[str] = TypeAdapter(LabelKey)
_VALUE: TypeAdapter[str] = TypeAdapter(LabelValue)


def _problem(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def parse_label(text: str, *, reserved: bool = False) -> tuple[str, str]:
    """`key=value` → (key, value); ValueError naming the label and the rule otherwise.
    `reserved`: hive.* keys are allowed (`--labels` describes another hive, its own too)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"label {show(text)} is not key=value (for example gpu=a)")
    if key.startswith(RESERVED_PREFIX) and not reserved:
        raise ValueError(
            f"label {show(key)}: keys starting with {RESERVED_PREFIX!r} are set by hive "
            f"({NAME_LABEL}: the hive id, {HOSTNAME_LABEL}: the hostname); choose another key"
        )
    try:
        _KEY.validate_python(key)
    except ValidationError as exc:
        raise ValueError(f"label key {show(key)}: {_problem(exc)}") from None
    try:
        _VALUE.validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"the value of label {show(key)}: {_problem(exc)}") from None
    return key, value


def parse_labels(items: Iterable[str], *, reserved: bool = False) -> dict[str, str]:
    """Each `key=value` (a key given twice: the last wins, as for flags)."""
    return dict(parse_label(item, reserved=reserved) for item in items)


def split_labels(text: str) -> list[str]:
    """`k=v,k2=v2` (HIVE_LABELS, --labels) → its items; blanks are skipped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def hive_labels(user: dict[str, str], *, hive_id: str, hostname: str) -> dict[str, str]:
    """The labels selectors see: the user's, and hive's own two."""
    return {**user, NAME_LABEL: hive_id, HOSTNAME_LABEL: hostname}
