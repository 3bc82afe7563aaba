"""spec.hiveSelector: Kubernetes' label selector semantics, its validation (errors located by
file, line and field as every manifest error is), and the hive's own labels."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from hive.core.parse import parse_text
from hive.model.ids import SourceName
from hive.model.labels import hive_labels, parse_label, parse_labels, split_labels
from hive.model.manifests import LabelSelector, ModelManifest, selected
from hive.settings import Settings

HIVE = {"gpu": "a", "zone": "eu", "hive.name": "n1"}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),  # empty: every hive
        ({"matchLabels": {}, "matchExpressions": []}, True),
        ({"matchLabels": {"gpu": "a"}}, True),
        ({"matchLabels": {"gpu": "b"}}, False),
        ({"matchLabels": {"gpu": "a", "zone": "us"}}, False),  # every pair must hold
        ({"matchLabels": {"missing": "x"}}, False),
        ({"matchLabels": {"hive.name": "n1"}}, True),
        ({"matchExpressions": [expr("gpu", "In", "a", "b")]}, True),
        ({"matchExpressions": [expr("gpu", "In", "b", "c")]}, False),
        ({"matchExpressions": [expr("missing", "In", "a")]}, False),
        ({"matchExpressions": [expr("gpu", "NotIn", "b")]}, True),
        ({"matchExpressions": [expr("gpu", "NotIn", "a")]}, False),
        ({"matchExpressions": [expr("missing", "NotIn", "a")]}, True),  # as Kubernetes
        ({"matchExpressions": [expr("gpu", "Exists")]}, True),
        ({"matchExpressions": [expr("missing", "Exists")]}, False),
        ({"matchExpressions": [expr("gpu", "DoesNotExist")]}, False),
        ({"matchExpressions": [expr("missing", "DoesNotExist")]}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, True),  # no values
        (
            {"matchLabels": {"zone": "eu"}, "matchExpressions": [expr("gpu", "In", "a")]},
            True,
        ),
        (
            {"matchLabels": {"zone": "eu"}, "matchExpressions": [expr("gpu", "In", "b")]},
            False,
        ),
        (
            {"matchExpressions": [expr("gpu", "Exists"), expr("zone", "NotIn", "eu")]},
            False,
        ),
    ],
)
def test_selector_matches_as_kubernetes_does(selector: dict[str, Any], matches: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(HIVE) is matches


def model(selector: dict[str, Any] | None) -> ModelManifest:
    spec: dict[str, Any] = {"source": "https://example.com/x.gguf"}
    if selector is not None:
        spec["hiveSelector"] = selector
    return ModelManifest.model_validate(
        {"apiVersion": "hive/v1", "kind": "Model", "metadata": {"name": "m"}, "spec": spec}
    )


def test_no_selector_applies_to_every_hive_and_no_labels_select_everything() -> None:
    assert selected(model(None), {})
    assert selected(model(None), HIVE)
    assert not selected(model({"matchLabels": {"gpu": "b"}}), HIVE)
    assert not selected(model({"matchLabels": {"gpu": "a"}}), {})
    assert selected(model({"matchLabels": {"gpu": "b"}}), None)  # offline, no --labels


DOC = """\
apiVersion: hive/v1
kind: {kind}
metadata:
  name: m
spec:
{spec}
  hiveSelector:
{selector}
"""
MODEL_SPEC = "  source: https://example.com/x.gguf"
WORKER_SPEC = "  model: m\n  runtime: llama-cpp"


@pytest.mark.parametrize(("kind", "spec"), [("Model", MODEL_SPEC), ("Worker", WORKER_SPEC)])
@pytest.mark.parametrize(
    ("selector", "field", "message"),
    [
        (
            "    matchExpressions:\n      - {key: gpu, operator: In}",
            "spec.hiveSelector.matchExpressions[0].values",
            "operator In needs at least one value",
        ),
        (
            "    matchExpressions:\n      - {key: gpu, operator: NotIn, values: []}",
            "spec.hiveSelector.matchExpressions[0].values",
            "operator NotIn needs at least one value",
        ),
        (
            "    matchExpressions:\n      - {key: gpu, operator: Exists}\n"
            "      - {key: gpu, operator: DoesNotExist, values: [a]}",
            "spec.hiveSelector.matchExpressions[1].values",
            "operator DoesNotExist takes no values",
        ),
        (
            "    matchExpressions:\n      - {key: gpu, operator: Equals, values: [a]}",
            "spec.hiveSelector.matchExpressions[0].operator",
            "'In', 'NotIn', 'Exists' or 'DoesNotExist'",
        ),
        (
            "    matchExpressions:\n      - {operator: Exists}",
            "spec.hiveSelector.matchExpressions[0].key",
            "",
        ),
        ("    matchLabel: {gpu: a}", "spec.hiveSelector.matchLabel", ""),
        ("    matchLabels: {gpu: " + "x" * 64 + "}", "spec.hiveSelector.matchLabels.gpu", "63"),
    ],
)
def test_selector_errors_name_file_line_and_field(
    kind: str, spec: str, selector: str, field: str, message: str
) -> None:
    text = DOC.format(kind=kind, spec=spec, selector=selector)
    result = parse_text(textwrap.dedent(text), file="f.yaml", source=SourceName("t"))
    assert not result.records
    assert len(result.problems) == 1, [str(p) for p in result.problems]
    problem = result.problems[0]
    assert (problem.file, problem.field) == ("f.yaml", field), str(problem)
    assert problem.line is not None and problem.line >= 7  # at the selector, not the top
    assert message in problem.message, str(problem)


def test_a_valid_selector_is_kept_on_both_kinds() -> None:
    for kind, spec in (("Model", MODEL_SPEC), ("Worker", WORKER_SPEC)):
        selector = "    matchLabels: {gpu: a}\n    matchExpressions:\n" + (
            "      - {key: zone, operator: NotIn, values: [us]}"
        )
        text = DOC.format(kind=kind, spec=spec, selector=selector)
        result = parse_text(text, file="f.yaml", source=SourceName("t"))
        assert not result.problems, [str(p) for p in result.problems]
        manifest = result.records[0].manifest
        assert manifest.spec.hiveSelector is not None
        assert manifest.spec.hiveSelector.matches({"gpu": "a", "zone": "eu"})
        assert not manifest.spec.hiveSelector.matches({"gpu": "a", "zone": "us"})


def test_hive_labels_parse_and_refuse_what_the_manifests_refuse() -> None:
    assert parse_labels(split_labels("gpu=a, zone=eu ,,")) == {"gpu": "a", "zone": "eu"}
    assert parse_label("empty=") == ("empty", "")
    for text, message in [
        ("gpu", "is not key=value"),
        ("=a", "is not key=value"),
        ("gpu=" + "x" * 64, "at most 63 characters"),
        ("gpu=a\tb", "control character"),
        ("hive.name=other", "set by hive"),
        ("hive.hostname=other", "set by hive"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_label(text)
    assert parse_label("hive.name=n2", reserved=True) == ("hive.name", "n2")  # --labels
    assert hive_labels({"gpu": "a"}, hive_id="n1", hostname="box") == {
        "gpu": "a",
        "hive.name": "n1",
        "hive.hostname": "box",
    }


def test_settings_take_labels_from_flags_and_hive_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_LABELS", "gpu=a,zone=eu")
    monkeypatch.setenv("HIVE_HIVE_ID", "n1")
    settings = Settings.from_env()
    assert settings.labels == {"gpu": "a", "zone": "eu"}
    assert settings.hive_labels["hive.name"] == "n1"
    assert settings.hive_labels["hive.hostname"]
    # flags win key by key: the layers merge
    assert Settings.from_env(labels=["gpu=b"]).labels == {"gpu": "b", "zone": "eu"}
    monkeypatch.setenv("HIVE_LABELS", "hive.name=x")
    with pytest.raises(ValueError, match="set by hive"):
        Settings.from_env()
