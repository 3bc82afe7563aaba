"""Manifest text → records, or problems that name file, line, field and what is allowed.

Line numbers in the texts below are written next to the lines that matter; a problem a
user cannot locate is a problem the user cannot fix.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive.core.parse import (
    MAX_MANIFEST_BYTES,
    ParseResult,
    Problem,
    is_manifest_file,
    merge_files,
    parse_bytes,
    parse_file,
    parse_text,
)
from hive.model.ids import NAME_PATTERN, SourceName, name_problem
from hive.model.manifests import ModelManifest, WorkerManifest

SOURCE = SourceName("dir")


def parse(text: str, file: str = "f.yaml") -> ParseResult:
    return parse_text(textwrap.dedent(text), file=file, source=SOURCE)


def model_text(
    name: str = "tiny", source: str = "https://example.com/tiny.gguf", extra: str = ""
) -> str:
    """A Model document: apiVersion 1, kind 2, metadata 3, name 4, spec 5, source 6."""
    return (
        "apiVersion: hive/v1\n"
        "kind: Model\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  source: {source}\n"
        f"{extra}"
    )


def worker_text(extra: str = "") -> str:
    """A Worker document; `extra` lines go into spec and start at line 8."""
    return (
        "apiVersion: hive/v1\n"
        "kind: Worker\n"
        "metadata:\n"
        "  name: chat\n"
        "spec:\n"
        "  model: tiny\n"
        "  runtime: llama-cpp\n"
        f"{extra}"
    )


def only_problem(result: ParseResult) -> Problem:
    assert not result.records, "a result with problems must not carry records"
    assert len(result.problems) == 1, [str(p) for p in result.problems]
    return result.problems[0]


# -- problems: one per case, located --------------------------------------------------------

PROBLEM_CASES: list[tuple[str, str, int | None, str | None, str]] = [
    # (id, text, line, field, a piece of the message that says what is wrong or allowed)
    (
        "malformed-yaml",
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: tiny: extra\nspec: {}\n",
        4,
        None,
        "malformed YAML: mapping values are not allowed",
    ),
    (
        "tab-indented-yaml",
        "apiVersion: hive/v1\nkind: Model\n\tmetadata: {}\n",
        3,
        None,
        "malformed YAML",
    ),
    ("document-is-a-list", "- a\n- b\n", 1, None, "a document must be a mapping"),
    ("document-is-a-scalar", "just some words\n", 1, None, "not a str"),
    (
        "unknown-kind",
        "apiVersion: hive/v1\nkind: Service\nmetadata: {name: a}\n",
        2,
        "kind",
        "'Service' is not supported (use Model, Worker)",
    ),
    (
        "missing-kind",
        "apiVersion: hive/v1\nmetadata: {name: a}\n",
        1,
        "kind",
        "required field is missing (use Model, Worker)",
    ),
    (
        "unknown-apiVersion",
        "kind: Model\napiVersion: hive/v2\n",
        2,
        "apiVersion",
        "'hive/v2' is not supported (use hive/v1)",
    ),
    (
        "kubernetes-apiVersion",
        "apiVersion: v1\nkind: Model\n",
        1,
        "apiVersion",
        "'v1' is not supported (use hive/v1)",
    ),
    (
        "missing-apiVersion",
        "# a comment\nkind: Model\n",
        2,
        "apiVersion",
        "required field is missing (use hive/v1)",
    ),
    (
        "missing-metadata.name",
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  labels: {a: b}\nspec: {source: file:x}\n",
        3,
        "metadata.name",
        "required field is missing",
    ),
    (
        "missing-spec.source",
        "apiVersion: hive/v1\nkind: Model\nmetadata: {name: a}\nspec:\n  state: present\n",
        4,
        "spec.source",
        "required field is missing",
    ),
    (
        "missing-spec",
        "apiVersion: hive/v1\nkind: Model\nmetadata: {name: a}\n",
        1,
        "spec",
        "required field is missing",
    ),
    (
        "metadata-not-a-mapping",
        "apiVersion: hive/v1\nkind: Model\nmetadata: tiny\nspec: {source: file:x}\n",
        3,
        "metadata",
        "must be a mapping, got str",
    ),
    (
        "unknown-top-level-field",
        model_text() + "status:\n  phase: Available\n",
        7,
        "status",
        "unknown field",
    ),
    (
        "unknown-metadata-field",
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\n  namespace: default\n"
        "spec: {source: file:x}\n",
        5,
        "metadata.namespace",
        "unknown field",
    ),
    (
        "unknown-spec-field",
        model_text(extra="  replicas: 2\n"),
        7,
        "spec.replicas",
        "unknown field",
    ),
    ("name-with-slash", model_text(name="a/b"), 4, "metadata.name", "'a/b' is not a valid name"),
    ("name-with-dotdot", model_text(name="a..b"), 4, "metadata.name", "must not contain '..'"),
    ("name-upper-case", model_text(name="Tiny"), 4, "metadata.name", "'Tiny' is not a valid name"),
    ("name-leading-dash", model_text(name="-a"), 4, "metadata.name", "is not a valid name"),
    ("name-empty", model_text(name='""'), 4, "metadata.name", "must not be empty"),
    (
        "name-64-chars",
        model_text(name="a" * 64),
        4,
        "metadata.name",
        "is 64 characters long; at most 63 are allowed",
    ),
    ("name-not-a-string", model_text(name="[a]"), 4, "metadata.name", "valid string"),
    (
        "label-value-too-long",
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\n  labels:\n"
        f"    k: {'v' * 64}\nspec: {{source: file:x}}\n",
        6,
        "metadata.labels.k",
        "longer than 63 characters",
    ),
    (
        "source-without-scheme",
        model_text(source="tiny.gguf"),
        6,
        "spec.source",
        "'tiny.gguf' has no scheme (use hf://, https://, http:// or file:)",
    ),
    (
        "source-hf-without-file-or-quant",
        model_text(source="hf://org/repo"),
        6,
        "spec.source",
        "is not a Hugging Face source (use hf://org/repo/path/file.gguf[@revision]",
    ),
    (
        "source-https-without-host",
        model_text(source="https:///x.gguf"),
        6,
        "spec.source",
        "no host",
    ),
    ("source-file-without-path", model_text(source="file://"), 6, "spec.source", "has no path"),
    (
        "state-unknown",
        model_text(extra="  state: gone\n"),
        7,
        "spec.state",
        "got 'gone'; allowed: 'present' or 'absent'",
    ),
    (
        "duplicate-key",
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\n  name: b\n"
        "spec: {source: file:x}\n",
        5,
        "metadata.name",
        "duplicate key",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in PROBLEM_CASES],
)
def test_problem_names_file_line_field_and_what_is_allowed(
    text: str, line: int | None, field: str | None, message: str
) -> None:
    problem = only_problem(parse_text(text, file="m/bad.yaml", source=SOURCE))
    assert problem.file == "m/bad.yaml"
    assert problem.line == line
    assert problem.field == field
    assert message in problem.message
    expected_where = f"m/bad.yaml:{line}: " + (f"{field}: " if field else "")
    assert str(problem).startswith(expected_where)


def test_unsupported_scheme_message_is_exact_and_points_at_the_source_line() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: hive/v1
        kind: Model
        metadata:
          name: tiny
          labels: {family: llama}
        spec:
          source: ftp://example.com/tiny.gguf
        """
    )
    problem = only_problem(parse_text(text, file="bad.yaml", source=SOURCE))
    assert str(problem) == (
        "bad.yaml:7: spec.source: scheme 'ftp' is not supported "
        "(use hf://, https://, http:// or file:)"
    )


def test_source_on_its_own_line_is_located_at_the_key() -> None:
    text = model_text(source="\n    ftp://example.com/x.gguf")
    problem = only_problem(parse_text(text, file="f.yaml", source=SOURCE))
    assert (problem.line, problem.field) == (6, "spec.source")


@pytest.mark.parametrize(
    "sha",
    ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "not-a-hash"],
    ids=["upper-case", "short", "long", "not-hex", "words"],
)
def test_bad_sha256_is_refused_with_what_is_expected(sha: str) -> None:
    problem = only_problem(parse(model_text(extra=f"  sha256: '{sha}'\n")))
    assert (problem.line, problem.field) == (7, "spec.sha256")
    assert "64 lower-case hex digits" in problem.message


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: hive/v1
        kind: Model
        metadata:
          name: Tiny_Llama
        spec:
          source: ftp://example.com/tiny.gguf
          sha256: not-a-hash
        """
    )
    problems = parse(text).problems
    assert [(p.line, p.field) for p in problems] == [
        (4, "metadata.name"),
        (6, "spec.source"),
        (7, "spec.sha256"),
    ]


def test_examples_invalid_file_reports_every_mistake() -> None:
    root = Path(__file__).resolve().parents[2]
    result = parse_file(root / "examples/invalid/bad.yaml", source=SOURCE, display="bad.yaml")
    assert [(p.line, p.field) for p in result.problems] == [
        (6, "metadata.name"),
        (8, "spec.source"),
        (9, "spec.sha256"),
        (18, "spec.device"),
        (19, "spec.restartPolicy"),
    ]
    assert not result.records


# -- accepted sources --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "hf://org/repo/path.gguf",
        "hf://org/repo/sub/dir/model.Q4_K_M.gguf",
        "hf://org/repo/path.gguf@rev",
        "hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama.Q4_K_M.gguf@main",
        "hf://org/repo:Q4_K_M",
        "hf://org/repo:Q4_K_M@v1.0",
        "https://host/x.gguf",
        "https://host.example.com:8443/models/x.gguf?download=1",
        "http://127.0.0.1:8080/x.gguf",
        "file:rel.gguf",
        "file:../models/tiny-llama.gguf",
        "file:/abs.gguf",
        "file:///abs.gguf",
    ],
)
def test_supported_source_forms_are_accepted_verbatim(source: str) -> None:
    result = parse(model_text(source=source))
    assert result.ok, [str(p) for p in result.problems]
    (record,) = result.records
    assert isinstance(record.manifest, ModelManifest)
    assert record.manifest.spec.source == source


def test_upper_case_scheme_is_accepted_or_explained() -> None:
    result = parse(model_text(source="HTTPS://example.com/x.gguf"))
    assert result.ok or "'https' is not supported" not in result.problems[0].message


def test_file_source_with_a_host_is_refused() -> None:
    problem = only_problem(parse(model_text(source="file://server/x.gguf")))
    assert (problem.line, problem.field) == (6, "spec.source")


def test_valid_model_record_carries_its_origin_and_defaults() -> None:
    result = parse_text(model_text(), file="models/a.yaml", source=SOURCE)
    (record,) = result.records
    assert record.key == "Model/tiny"
    assert record.origin.source == SOURCE
    assert record.origin.file == Path("models/a.yaml")
    assert record.origin.line == 1
    assert isinstance(record.manifest, ModelManifest)
    assert record.manifest.spec.state == "present"
    assert record.manifest.spec.sha256 is None


def test_name_of_63_characters_is_accepted() -> None:
    result = parse(model_text(name="a" * 63))
    assert result.ok
    assert result.records[0].name == "a" * 63


# -- empty files and several documents --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "# c\n---\n# d\n---\n...\n"],
    ids=["empty", "blank-lines", "comment", "separator", "comments-and-separators"],
)
def test_file_without_documents_is_refused(text: str) -> None:
    problem = only_problem(parse_text(text, file="empty.yaml", source=SOURCE))
    assert problem.line is None
    assert str(problem).startswith("empty.yaml: no documents")
    assert "delete the file" in problem.message


def test_several_documents_each_get_their_own_start_line() -> None:
    text = (
        "# models for the chat box\n"  # 1
        "---\n"  # 2
        + model_text(name="first")  # 3-8
        + "---\n"  # 9
        "# the second one\n"  # 10
        + model_text(name="second")  # 11-16
        + "---\n"  # 17
        + worker_text()  # 18-24
    )
    result = parse(text)
    assert result.ok, [str(p) for p in result.problems]
    assert [(r.key, r.origin.line) for r in result.records] == [
        ("Model/first", 3),
        ("Model/second", 11),
        ("Worker/chat", 18),
    ]


def test_problem_in_a_later_document_has_its_line_in_the_file() -> None:
    text = model_text(name="first") + "---\n" + model_text(name="second", source="ftp://x/y")
    problem = only_problem(parse(text))
    assert (problem.line, problem.field) == (13, "spec.source")


def test_one_bad_document_refuses_the_whole_file() -> None:
    text = model_text(name="good") + "---\n" + model_text(name="Bad")
    result = parse(text)
    assert not result.ok
    assert result.records == ()


def test_malformed_yaml_after_a_good_document_refuses_the_file() -> None:
    text = model_text(name="good") + "---\n" + "key: [unclosed\nother: 1\n"
    problem = only_problem(parse(text))
    assert problem.line == 9
    assert problem.message.startswith("malformed YAML")


def test_same_name_twice_in_a_file_names_both_lines() -> None:
    text = model_text() + "---\n" + model_text()
    problem = only_problem(parse(text))
    assert problem.line == 8
    assert problem.field == "metadata.name"
    assert problem.message == ("Model/tiny is already declared at f.yaml:1; remove one of the two")


def test_a_model_and_a_worker_may_share_a_name() -> None:
    text = model_text(name="chat") + "---\n" + worker_text()
    result = parse(text)
    assert result.ok
    assert {r.key for r in result.records} == {"Model/chat", "Worker/chat"}


def test_merge_files_keeps_the_first_declaration_in_path_order() -> None:
    a = parse_text(model_text(), file="a.yaml", source=SOURCE).records
    b = parse_text("# x\n" + model_text(), file="b.yaml", source=SOURCE).records
    records, problems = merge_files({"b.yaml": b, "a.yaml": a})
    assert [str(r.origin.file) for r in records] == ["a.yaml"]
    (problem,) = problems
    assert str(problem) == (
        "b.yaml:2: metadata.name: Model/tiny is already declared at a.yaml:1; remove one of the two"
    )


# -- bytes and files ------------------------------------------------------------------------------


def test_fifty_megabytes_are_refused_quickly_with_a_size_message() -> None:
    raw = b"# padding\n" * 5_000_000
    result = parse_bytes(raw, file="huge.yaml", source=SOURCE)
    problem = only_problem(result)
    assert problem.message.startswith("file is 50.0 MB; manifests are limited to 4 MiB")


def test_one_byte_over_the_limit_is_refused() -> None:
    problem = only_problem(
        parse_bytes(b" " * (MAX_MANIFEST_BYTES + 1), file="f.yaml", source=SOURCE)
    )
    assert "limited to 4 MiB" in problem.message


def test_non_utf8_bytes_name_the_line() -> None:
    raw = b"apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: caf\xe9\n"
    problem = only_problem(parse_bytes(raw, file="f.yaml", source=SOURCE))
    assert problem.line == 4
    assert "not UTF-8" in problem.message


def test_parse_bytes_parses_utf8_text() -> None:
    result = parse_bytes(model_text().encode(), file="f.yaml", source=SOURCE)
    assert [r.key for r in result.records] == ["Model/tiny"]


def test_parse_file_reads_a_large_file_only_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (50 * 1024 * 1024))
    problem = only_problem(parse_file(path, source=SOURCE))
    assert problem.file == str(path)
    assert "limited to 4 MiB" in problem.message


def test_parse_file_uses_the_display_name(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(model_text(source="ftp://x/y"))
    problem = only_problem(parse_file(path, source=SOURCE, display="desired/m.yaml"))
    assert str(problem).startswith("desired/m.yaml:6: spec.source: ")


def test_parse_file_records_point_at_the_real_file(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(model_text())
    (record,) = parse_file(path, source=SOURCE).records
    assert record.origin.file == path


def test_unreadable_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    missing = only_problem(parse_file(tmp_path / "gone.yaml", source=SOURCE))
    assert "cannot read: No such file or directory" in missing.message
    directory = only_problem(parse_file(tmp_path, source=SOURCE))
    assert "cannot read" in directory.message


def _json_doc(source: str = "https://example.com/tiny.gguf") -> dict[str, object]:
    return {
        "apiVersion": "hive/v1",
        "kind": "Model",
        "metadata": {"name": "tiny", "labels": {"family": "llama"}},
        "spec": {"source": source},
    }


def test_json_file_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_json_doc(), indent=2))
    result = parse_file(path, source=SOURCE)
    (record,) = result.records
    assert record.key == "Model/tiny"
    assert record.manifest.metadata.labels == {"family": "llama"}


def test_json_problem_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_json_doc("ftp://x/y"), indent=2))
    problem = only_problem(parse_file(path, source=SOURCE, display="m.json"))
    # {, apiVersion, kind, metadata {, name, labels {, family, }, }, spec {, source
    assert str(problem).startswith("m.json:11: spec.source: scheme 'ftp' is not supported")


def test_single_line_json_is_parsed() -> None:
    result = parse_text(json.dumps(_json_doc()), file="m.json", source=SOURCE)
    assert [r.key for r in result.records] == ["Model/tiny"]


def test_tab_indented_json_is_parsed() -> None:
    text = json.dumps(_json_doc(), indent="\t")
    result = parse_text(text, file="m.json", source=SOURCE)
    assert [r.key for r in result.records] == ["Model/tiny"], [str(p) for p in result.problems]


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("models.yaml", True),
        ("models.yml", True),
        ("models.json", True),
        ("MODELS.YAML", True),
        ("a.b.yaml", True),
        (".hidden.yaml", False),
        (".models.yaml.swp", False),
        ("models.yaml~", False),
        ("models.yaml.swp", False),
        ("models.yaml.swx", False),
        ("#models.yaml#", False),
        ("models.txt", False),
        ("models.yaml.bak", False),
        ("README.md", False),
        ("models", False),
    ],
)
def test_is_manifest_file(name: str, wanted: bool) -> None:
    assert is_manifest_file(Path("desired") / name) is wanted


# -- Worker ---------------------------------------------------------------------------------------


def test_worker_defaults() -> None:
    (record,) = parse(worker_text()).records
    manifest = record.manifest
    assert isinstance(manifest, WorkerManifest)
    spec = manifest.spec
    assert (spec.device, spec.port, spec.restartPolicy, spec.state) == (
        "CPU-0",
        None,
        "Always",
        "running",
    )
    assert spec.args == {}
    assert spec.hiveSelector is None


@pytest.mark.parametrize(
    "extra",
    [
        "  device: CPU-0\n",
        "  device: GPU-0\n",
        "  device: GPU-7\n",
        "  device: GPU-999\n",
        "  port: 1024\n",
        "  port: 65535\n",
        "  restartPolicy: Always\n",
        "  restartPolicy: OnFailure\n",
        "  restartPolicy: Never\n",
        "  state: stopped\n",
        "  args:\n    ctx_size: 4096\n    temp: 0.7\n    chat_template: chatml\n    mlock: true\n",
        "  hiveSelector:\n    matchLabels:\n      gpu: h100\n",
        "  hiveSelector: {}\n",
    ],
)
def test_worker_accepts(extra: str) -> None:
    result = parse(worker_text(extra))
    assert result.ok, [str(p) for p in result.problems]


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("  device: CPU-1\n", "spec.device", "'CPU-1' is not a device (use CPU-0 or GPU-<n>"),
        ("  device: GPU-01\n", "spec.device", "is not a device"),
        ("  device: gpu-0\n", "spec.device", "is not a device"),
        ("  device: GPU-1000\n", "spec.device", "is not a device"),
        ("  device: GPU\n", "spec.device", "is not a device"),
        ("  port: 1023\n", "spec.port", "greater than or equal to 1024"),
        ("  port: 65536\n", "spec.port", "less than or equal to 65535"),
        ("  port: '8080'\n", "spec.port", "valid integer"),
        ("  port: true\n", "spec.port", "valid integer"),
        ("  restartPolicy: always\n", "spec.restartPolicy", "'Always', 'OnFailure' or 'Never'"),
        ("  state: present\n", "spec.state", "allowed: 'running' or 'stopped'"),
        ("  command: /bin/sh\n", "spec.command", "unknown field"),
    ],
)
def test_worker_refuses(extra: str, field: str, message: str) -> None:
    problem = only_problem(parse(worker_text(extra)))
    assert problem.line == 8
    assert problem.field == field
    assert message in problem.message


@pytest.mark.parametrize(
    ("spec", "line", "field", "message"),
    [
        ("  model: Tiny\n  runtime: llama-cpp\n", 6, "spec.model", "'Tiny' is not a valid name"),
        ("  model: tiny\n  runtime: /usr/bin/x\n", 7, "spec.runtime", "is not a valid name"),
        ("  runtime: llama-cpp\n", 5, "spec.model", "required field is missing"),
        (
            "  model: tiny\n  runtime: llama-cpp\n  hiveSelector:\n    matchFields: []\n",
            9,
            "spec.hiveSelector.matchFields",
            "unknown field",
        ),
        (
            "  model: tiny\n  runtime: llama-cpp\n  hiveSelector:\n    matchLabels:\n"
            "      gpu: 1\n",
            10,
            "spec.hiveSelector.matchLabels.gpu",
            "valid string",
        ),
    ],
)
def test_worker_spec_fields_are_located(spec: str, line: int, field: str, message: str) -> None:
    text = "apiVersion: hive/v1\nkind: Worker\nmetadata:\n  name: chat\nspec:\n" + spec
    problem = only_problem(parse(text))
    assert (problem.line, problem.field) == (line, field)
    assert message in problem.message


@pytest.mark.parametrize("key", ["CtxSize", "1abc", "ctx-size", "_x"])
def test_worker_args_key_pattern(key: str) -> None:
    problem = only_problem(parse(worker_text(f"  args:\n    {key}: 1\n")))
    assert problem.line == 9
    assert problem.field is not None
    assert problem.field.startswith(f"spec.args.{key}")
    assert "^[a-z][a-z0-9_]*$" in problem.message


def test_worker_args_key_problem_field_is_the_key_path() -> None:
    problem = only_problem(parse(worker_text("  args:\n    CtxSize: 1\n")))
    assert problem.field == "spec.args.CtxSize"


def test_worker_args_value_of_wrong_type_is_one_problem() -> None:
    problem = only_problem(parse(worker_text("  args:\n    x: [1, 2]\n")))
    assert problem.field == "spec.args.x"


# -- never an exception ---------------------------------------------------------------------------


_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"), whitelist_characters="\t\n\r")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(_PRINTABLE, max_size=400))
def test_parse_text_never_raises_on_arbitrary_printable_text(text: str) -> None:
    result = parse_text(text, file="f.yaml", source=SOURCE)
    assert bool(result.records) != bool(result.problems)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=400))
def test_parse_text_never_raises_on_arbitrary_text(text: str) -> None:
    result = parse_text(text, file="f.yaml", source=SOURCE)
    assert bool(result.records) != bool(result.problems)


_YAML_PIECES = [
    "apiVersion: hive/v1\n",
    "kind: Model\n",
    "kind: Worker\n",
    "metadata:\n",
    "  name: a\n",
    "spec:\n",
    "  source: file:x\n",
    "---\n",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "  ",
    "\n",
    "'",
    '"',
    "#",
    "?",
    "a",
    "1",
    "null",
    "~",
]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_YAML_PIECES), max_size=40).map("".join))
def test_parse_text_never_raises_on_yaml_like_text(text: str) -> None:
    result = parse_text(text, file="f.yaml", source=SOURCE)
    assert bool(result.records) != bool(result.problems)
    for problem in result.problems:
        assert problem.line is None or problem.line >= 1


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\n  labels:\n    day: 2024-02-30\n",
        "a: 2001-13-45\n",
        "a: !!bool maybe\n",
        "a: !!int abc\n",
        "a: !!float x\n",
        "&a [*a]\n",
        "[" * 1000,
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\x1b[0m\n",
        "\x00",
    ],
    ids=[
        "impossible-date-label",
        "impossible-date",
        "bool-tag",
        "int-tag",
        "float-tag",
        "recursive-alias",
        "deep-nesting",
        "terminal-escape",
        "nul",
    ],
)
def test_parse_text_never_raises_on_unconstructible_yaml(text: str) -> None:
    problem = only_problem(parse_text(text, file="f.yaml", source=SOURCE))
    assert problem.file == "f.yaml"


_ALIAS_BOMB = "\n".join(
    ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
)


def test_alias_bomb_is_answered_quickly() -> None:
    # In a child process so that the hang can be stopped; only the parse itself is timed.
    code = textwrap.dedent(
        """
        import sys
        from hive.core.parse import parse_text
        text = sys.stdin.read()
        print("ready", flush=True)
        result = parse_text(text, file="bomb.yaml", source="dir")
        print("done", result.ok, flush=True)
        """
    )
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write(_ALIAS_BOMB)
        child.stdin.close()
        assert child.stdout.readline().strip() == "ready"
        try:
            # A deadline for a hang, not a timing: unbounded, this takes hours.
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            pytest.fail("parsing a 700-byte manifest did not finish within 60 s")
        assert child.stdout.read().startswith("done False")


def test_a_value_that_cannot_be_built_names_its_document_line() -> None:
    text = "a: 1\n---\napiVersion: hive/v1\nkind: Model\nmetadata:\n  name: a\n  labels:\n"
    problems = parse_text(text + "    day: 2024-02-30\n", file="f.yaml", source=SOURCE).problems
    (bad,) = [p for p in problems if "out of range" in p.message]
    assert bad.line == 3


@pytest.mark.parametrize("depth", [1_000, 20_000])
def test_deep_block_nesting_is_a_problem_not_a_crash(depth: int) -> None:
    text = "".join(" " * i + "a:\n" for i in range(depth)) + " " * depth + "b: 1\n"
    problem = only_problem(parse_text(text, file="f.yaml", source=SOURCE))
    assert problem.message.startswith("malformed YAML")


# -- issue 13: alias bombs anywhere, every echo bounded ----------------------------------------


def _issue_bomb(levels: int) -> str:
    """The issue's repro: `apiVersion` is an alias that expands through `levels` anchor
    levels of 9 items each (9**(levels+1) strings once expanded)."""
    lines = ["x:", '  a: &a ["lol"' + ',"lol"' * 8 + "]"]
    prev = "a"
    for c in "bcdefghi"[:levels]:
        lines.append(f"  {c}: &{c} [{','.join(['*' + prev] * 9)}]")
        prev = c
    lines += [
        f"apiVersion: *{prev}",
        "kind: Model",
        "metadata: {name: b}",
        'spec: {source: "file:/x.gguf"}',
    ]
    return "\n".join(lines) + "\n"


def test_alias_bomb_in_api_version_is_refused_before_it_is_built() -> None:
    """8 levels (441 bytes) once took 4.9 GB: run in a child with 1 GiB of address space,
    so that building the value fails (MemoryError) instead of swapping the machine."""
    code = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from hive.core.parse import parse_text
        result = parse_text(sys.stdin.read(), file="bomb.yaml", source="dir")
        for problem in result.problems:
            print(problem)
        """
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        input=_issue_bomb(8),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == (
        "bomb.yaml:1: x: aliases expand to more than 100,000 values; write the values out "
        "or use fewer anchors\n"
    )


def test_alias_bomb_of_six_levels_gives_one_short_problem() -> None:
    # Once: one 35 MB problem (and a 35 MB log line, SSE event and /v1/status).
    problem = only_problem(parse_text(_issue_bomb(6), file="bomb.yaml", source=SOURCE))
    assert (problem.line, problem.field) == (1, "x")
    assert "aliases expand to more than 100,000 values" in problem.message
    assert len(str(problem)) < 300


def test_alias_bomb_counts_every_use_of_an_anchor_wherever_it_is() -> None:
    # No single anchor is large; their uses together are.
    anchors = "a: &a [" + ", ".join(["x"] * 999) + "]\n"
    uses = "b: [" + ", ".join(["*a"] * 101) + "]\n"
    problem = only_problem(parse_text(anchors + uses, file="f.yaml", source=SOURCE))
    assert (problem.line, problem.field) == (2, "b")
    assert "aliases expand to more than 100,000 values" in problem.message


def test_aliases_that_expand_to_little_are_fine() -> None:
    text = worker_text("  hiveSelector: {matchLabels: *l}\n").replace(
        "  name: chat\n", "  name: chat\n  labels: &l {team: search}\n"
    )
    result = parse(text)
    assert result.ok, [str(p) for p in result.problems]
    (record,) = result.records
    assert record.manifest.spec.hiveSelector.matchLabels == {"team": "search"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("apiVersion: &a [*a]\nkind: Model\n", 1, "apiVersion"),
        ("apiVersion: hive/v1\nkind: Model\nmetadata:\n  labels: &l {x: *l}\n", 3, "metadata"),
        ("&a [*a]\n", 1, None),
    ],
    ids=["in-apiVersion", "in-labels", "the-document"],
)
def test_recursive_alias_is_refused(text: str, line: int, field: str | None) -> None:
    problem = only_problem(parse_text(text, file="f.yaml", source=SOURCE))
    assert (problem.line, problem.field) == (line, field)
    assert "an alias is used inside its own anchor" in problem.message


def test_more_values_than_the_limit_without_aliases_is_refused() -> None:
    text = "a: [" + ",".join(["1"] * 100_001) + "]\n"
    problem = only_problem(parse_text(text, file="f.yaml", source=SOURCE))
    assert problem.message == "holds more than 100,000 values; a manifest needs a few dozen"


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("apiVersion", "apiVersion: {long}\nkind: Model\n"),
        ("kind", "apiVersion: hive/v1\nkind: {long}\n"),
        ("spec.source", model_text(source="{long}:x")),
        ("spec.source", model_text(source="hf://{long}")),
        ("spec.source", model_text(source="https://alice:SECRET@/{long}")),
        ("spec.download.rateLimit", model_text(extra="  download: {rateLimit: {long}}\n")),
        ("spec.state", model_text(extra="  state: {long}\n")),
        ("spec.device", worker_text("  device: {long}\n")),
    ],
)
def test_an_echoed_value_is_bounded_and_redacted(field: str, text: str) -> None:
    problem = only_problem(parse(text.replace("{long}", "x" * 20_000)))
    assert problem.field == field
    assert len(problem.message) < 400, problem.message[:1000]
    assert "SECRET" not in str(problem)


def test_a_source_with_credentials_is_shown_redacted() -> None:
    problem = only_problem(parse(model_text(source="https://alice:hunter2@/m.gguf?token=Q")))
    assert "hunter2" not in problem.message and "token=Q" not in problem.message
    assert "alice:***@" in problem.message


def test_a_long_or_unprintable_key_is_shown_bounded_in_the_field() -> None:
    problem = only_problem(parse(model_text(extra=f"  ? {'k' * 5000}\n  : 1\n")))
    assert problem.field is not None and len(problem.field) < 100
    problem = only_problem(parse(model_text(extra='  "a\\nb": 1\n')))
    assert problem.field == "spec.'a\\nb'"


# -- issue 13: a name, device, checksum or label with a final newline ----------------------------


@pytest.mark.parametrize(
    ("field", "text"),
    [
        (
            "metadata.name",
            'apiVersion: hive/v1\nkind: Model\nmetadata: {name: "abc\\n"}\n'
            "spec: {source: file:x}\n",
        ),
        ("spec.sha256", model_text(extra=f'  sha256: "{"a" * 64}\\n"\n')),
        ("spec.device", worker_text('  device: "GPU-0\\n"\n')),
        ("spec.model", worker_text().replace("model: tiny", 'model: "tiny\\n"')),
        ("spec.source", model_text(source='"hf://org/repo:Q4_K_M\\n"')),
        ("spec.source", model_text(source='"https://example.com/m.gguf\\n"')),
        (
            "metadata.labels.team",
            model_text().replace("  name: tiny\n", '  name: tiny\n  labels: {team: "search\\n"}\n'),
        ),
        (
            "metadata.labels.a\\nb",
            model_text().replace("  name: tiny\n", '  name: tiny\n  labels: {"a\\nb": x}\n'),
        ),
    ],
    ids=[
        "name",
        "sha256",
        "device",
        "worker-model",
        "hf-source",
        "https-source",
        "label-value",
        "label-key",
    ],
)
def test_a_final_newline_is_refused(field: str, text: str) -> None:
    problem = only_problem(parse(text))
    assert problem.field is not None
    assert problem.field.replace("'", "") == field


_CONTROL = st.characters(categories=["Cc"])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(max_size=70),
        st.from_regex(NAME_PATTERN),  # may end in "\n": `$` matches before it
        st.tuples(st.from_regex(NAME_PATTERN, fullmatch=True), _CONTROL).map("".join),
    )
)
def test_an_accepted_name_fullmatches_the_pattern_and_holds_no_control_character(
    name: str,
) -> None:
    if name_problem(name) is None:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name)
        assert not any(unicodedata.category(c) == "Cc" for c in name)
        assert len(name) <= 63


class _CountingLines(dict[tuple[str | int, ...], int]):
    """A document's lines that count how often they are walked whole."""

    walks = 0

    def items(self) -> Any:
        type(self).walks += 1
        return super().items()


def test_a_long_list_body_walks_its_lines_once_not_once_per_item() -> None:
    """A body of thousands of records in one list: each item's lines are found in one
    pass (a pass per item was quadratic: minutes of CPU for 8,000 records)."""
    from hive.core.parse import _items, _Located

    count = 500
    lines = _CountingLines({(i, "metadata", "name"): i + 1 for i in range(count)})
    lines.update({(i,): i + 1 for i in range(count)})
    items = _items(_Located([{"metadata": {"name": f"m{i}"}} for i in range(count)], lines, 1))
    assert items is not None and len(items) == count
    assert items[7].line_of(("metadata", "name")) == 8
    assert _CountingLines.walks <= 2


def test_a_json_list_of_eight_thousand_records_under_one_mib_is_taken() -> None:
    """A `PUT /v1/desired` body of 8,000 records (a source holds 10,000) in one JSON list,
    under 1 MiB: more than 100,000 values, yet no alias bomb (a long text may hold a value
    per four characters)."""
    text = json.dumps(
        [
            {
                "apiVersion": "hive/v1",
                "kind": "Model",
                "metadata": {"name": f"m{i}"},
                "spec": {"source": "file:/nowhere/m.gguf", "state": "absent"},
            }
            for i in range(8_000)
        ],
        separators=(",", ":"),
    )
    assert len(text) < 1024 * 1024
    result = parse_text(text, file="PUT /v1/desired/many", source=SOURCE, lists=True)
    assert result.ok, [str(p) for p in result.problems[:3]]
    assert len(result.records) == 8_000
