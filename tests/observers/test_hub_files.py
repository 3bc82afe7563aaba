"""The hub listing's pure parts: which `repo` and `revision` values are taken (and the
400 naming the parameter otherwise), and how GGUF files group and get their tags."""

from __future__ import annotations

import pytest

from hive.errors import BadRequest
from hive.observers.hub_files import group, parse_repo


@pytest.mark.parametrize(
    ("repo", "revision", "expected"),
    [
        ("org/name", None, ("org/name", "main")),
        ("org/Name.v2-GGUF", "v1.0", ("org/Name.v2-GGUF", "v1.0")),
        ("hf://org/name/sub/model-Q4_K_M.gguf", None, ("org/name", "main")),
        ("hf://org/name:Q8_0@refs/pr/1", None, ("org/name", "refs/pr/1")),
        ("hf://org/name@dev", "main", ("org/name", "main")),  # the parameter wins
    ],
)
def test_repo_forms_taken(repo: str, revision: str | None, expected: tuple[str, str]) -> None:
    assert parse_repo(repo, revision) == expected


@pytest.mark.parametrize(
    ("repo", "revision", "field"),
    [
        (None, None, "repo:"),
        ("", None, "repo:"),
        ("name-only", None, "repo:"),
        ("a/b/c", None, "repo:"),
        ("a/b\n", None, "repo:"),
        ("../etc", None, "repo:"),
        ("org/name", "", "revision:"),
        ("org/name", "a b", "revision:"),
        ("org/" + "n" * 97, None, "repo:"),
    ],
)
def test_bad_values_name_their_parameter(
    repo: str | None, revision: str | None, field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_repo(repo, revision)
    assert caught.value.message.startswith(field)


def test_split_parts_group_and_tags() -> None:
    files = group(
        [
            ("README.md", 10),
            ("x/m-Q5_K_S-00002-of-00003.gguf", 2),
            ("x/m-Q5_K_S-00001-of-00003.gguf", 1),
            ("m.q8_0.gguf", 8),
            ("m-BF16.gguf", None),
        ],
        repo="o/r",
        revision="v2",
    )
    assert [(f.path, f.size, f.quantization, f.parts, f.parts_present) for f in files] == [
        ("m-BF16.gguf", None, "BF16", 1, 1),
        ("m.q8_0.gguf", 8, "Q8_0", 1, 1),
        ("x/m-Q5_K_S-00001-of-00003.gguf", 3, "Q5_K_S", 3, 2),  # one part missing
    ]
    assert files[1].source == "hf://o/r/m.q8_0.gguf@v2"
