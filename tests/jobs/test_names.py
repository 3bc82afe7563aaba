"""What a job's words mean in hive's terms (hive/jobs/names.py), as tables: model
references as sources and names, rbee's devices as hive's, and the names of the Workers a
job declares."""

from __future__ import annotations

import pytest

from hive.errors import BadRequest
from hive.jobs.names import (
    device_of,
    model_name_of,
    model_names,
    parse_device,
    source_of,
    worker_base,
    worker_names,
)
from hive.model.ids import name_problem


@pytest.mark.parametrize(
    ("model", "source"),
    [
        ("meta-llama/Llama-2-7b", "hf://meta-llama/Llama-2-7b:Q4_K_M"),
        ("org/repo:Q8_0", "hf://org/repo:Q8_0"),
        ("org/repo/sub/file.gguf", "hf://org/repo/sub/file.gguf"),
        ("org/repo:Q8_0@main", "hf://org/repo:Q8_0@main"),
        ("hf://org/repo/f.gguf", "hf://org/repo/f.gguf"),
        ("https://host/x.gguf", "https://host/x.gguf"),
        ("file:/srv/m.gguf", "file:/srv/m.gguf"),
    ],
)
def test_a_model_reference_as_a_source(model: str, source: str) -> None:
    assert source_of(model) == source


@pytest.mark.parametrize("model", ["llama", "../etc/passwd", "ftp://x/y.gguf", "a b/c", ""])
def test_what_is_neither_a_source_nor_an_id_is_refused(model: str) -> None:
    with pytest.raises(BadRequest, match="neither a source"):
        source_of(model)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("meta-llama/Llama-2-7b", "llama-2-7b"),
        ("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "llama-3.2-1b-instruct-q4-k-m"),
        ("hf://org/repo/Qwen2-7B-Q8_0-00001-of-00003.gguf", "qwen2-7b-q8-0"),
        ("https://host/dir/Tiny.GGUF?token=secret#x", "tiny"),
        ("file:/srv/models/my..model.gguf", "my.model"),
        ("org/" + "x" * 100, "x" * 63),
    ],
)
def test_a_model_reference_as_a_name(model: str, name: str) -> None:
    found = model_name_of(model)
    assert found == name
    assert name_problem(found) is None


def test_a_name_is_tried_as_itself_then_as_its_download() -> None:
    assert model_names("tiny") == ["tiny"]
    assert model_names("org/Tiny-GGUF:Q8_0") == ["tiny-q8-0"]
    assert model_names("Bad Name") == ["bad-name"]


@pytest.mark.parametrize(
    ("worker", "index", "device"),
    [("cpu", 0, "CPU-0"), ("cuda", 1, "GPU-1"), ("metal", 0, "GPU-0")],
)
def test_rbee_worker_types_and_indices_as_devices(worker: str, index: int, device: str) -> None:
    assert device_of(worker, index) == device


def test_a_cpu_worker_runs_on_device_zero_only() -> None:
    with pytest.raises(BadRequest, match="device 0"):
        device_of("cpu", 1)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("cpu", ("cpu", "CPU-0")),
        ("cuda:0", ("cuda", "GPU-0")),
        ("CUDA:2", ("cuda", "GPU-2")),
        ("gpu:1", ("cuda", "GPU-1")),
        ("metal:0", ("metal", "GPU-0")),
        ("GPU-3", ("cuda", "GPU-3")),
        ("CPU-0", ("cpu", "CPU-0")),
    ],
)
def test_model_loads_devices(text: str, parsed: tuple[str, str]) -> None:
    assert parse_device(text) == parsed


@pytest.mark.parametrize("text", ["tpu:0", "cuda:", "cuda:1234", "GPU-", "cuda:0\n", ""])
def test_what_is_not_a_device_is_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="is not a device"):
        parse_device(text)


def test_worker_names_skip_those_taken_and_fit_the_length() -> None:
    assert worker_names("w", 3, taken={"w", "w-3"}) == ["w-2", "w-4", "w-5"]
    long = worker_names("a" * 63, 2, taken=set())
    assert long == ["a" * 63, "a" * 61 + "-2"]
    assert all(name_problem(n) is None for n in long)
    assert worker_base("tiny", "GPU-0") == "tiny-gpu-0"
    assert len(worker_base("m" * 63, "GPU-12")) <= 63
