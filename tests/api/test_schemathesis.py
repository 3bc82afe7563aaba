"""schemathesis against a real `hive serve` on loopback: every operation of
specs/openapi.yaml with its examples, its coverage cases (methods a route does not serve,
values at and past each bound) and a few fuzzed cases; no answer may be a 5xx or differ
from what the spec documents (status, media type, schema, headers, `Allow` on a 405)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from tests.conftest import ROOT, Hive, free_port, model_yaml

SPEC_PATH = ROOT / "specs" / "openapi.yaml"
#: The live hive has a token: schemathesis sends it, and checks that every operation the
#: spec secures refuses a request without it or with another (its `ignored_auth` check).
TOKEN = "fuzz-token-fuzz-token-fuzz"


@pytest.fixture(scope="module")
def live_hive(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Hive]:
    """One hive of its own for every operation: the Model `tiny` declared, no worker (so
    no request can start or stop a process, `/logs?follow=1` never opens a stream, and a
    delete finds only a model declared present, which it must refuse)."""
    root = tmp_path_factory.mktemp("fuzzed")
    desired = root / "desired"
    desired.mkdir()
    (desired / "models.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = Hive(
        home=root / "home",
        desired=[desired],
        log=root / "hive.log",
        # A job's hf:// download goes to a dead loopback port, never to huggingface.co.
        env={
            "HIVE_SSE_KEEPALIVE": "0.05",
            "HIVE_CONSOLE": "0",
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HIVE_QUEEN_TELEMETRY_INTERVAL": "0.05",
            "HIVE_TOKEN": TOKEN,
        },
        extra_args=["--gpu-probe", "none"],
    )
    try:
        hive.start()
        hive.wait_phase("tiny", "Available")
        yield hive
    finally:
        hive.stop()


#: Every `?queen_url=` the cases send: a closed loopback port (a generated URL would
#: start heartbeats to whatever host it names; no test reaches beyond 127.0.0.1).
QUEEN_URL = f"http://127.0.0.1:{free_port()}"


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "parameters": {"query.queen_url": QUEEN_URL},
            "request-timeout": 10,
            "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
            "max-stream-events": 5,
            "generation": {"max-examples": 5, "no-shrink": True, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "operations": [
                # A stream is read until this timeout (or 5 events): a short one, so the
                # cases that open one take a few seconds in all; a retry covers an answer
                # that a loaded machine delays past it.
                {"include-path": "/v1/events", "request-timeout": 0.3, "request-retries": 2},
                # hive checks a manifest more strictly than a JSON Schema can say (a
                # source's scheme, a rate, a name's `..`): a body the spec's loose
                # `ManifestDocument` accepts may be answered 422, as the spec says.
                {
                    "include-path-regex": "^/v1/desired/",
                    "include-method": ["PUT", "PATCH"],
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "401", "404", "409", "422"]
                        }
                    },
                },
                # A job body that its schema takes may still name what this hive lacks or
                # cannot use (another hive's id, a source with no GGUF name in it): 400 with
                # the field, which no schema can foresee. Schema-violating bodies must still
                # be refused, and every answer must be documented.
                {
                    "include-path": "/v1/jobs",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                # The hub is the dead port above: a well-formed `repo` is the documented
                # 502 HubUnreachable (a gateway's answer, not a fault of hive's); every
                # answer must still be documented and valid.
                {
                    "include-path": "/v1/hub/files",
                    "checks": {
                        "not_a_server_error": {"enabled": False},
                        "positive_data_acceptance": {"expected-statuses": ["2xx", "502"]},
                    },
                },
                {
                    "include-path": "/v1/heartbeats/stream",
                    "request-timeout": 0.3,
                    "request-retries": 2,
                },
            ],
        }
    )


schema = schemathesis.openapi.from_path(SPEC_PATH, config=_config())


@schema.parametrize()
def test_every_answer_is_as_documented(case: schemathesis.Case[Any], live_hive: Hive) -> None:
    # Every check schemathesis has: no 5xx, status, media type, schema (of JSON and of each
    # SSE event), headers, 4xx for invalid input, 405 with `Allow` for an undeclared method.
    assert live_hive.url.startswith("http://127.0.0.1:")  # never the spec's servers[]
    case.call_and_validate(base_url=live_hive.url)
    queen = live_hive.get("/v1/status")["queen"]["url"]
    assert queen in (None, QUEEN_URL), queen  # only ever the loopback Queen above
