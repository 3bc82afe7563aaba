"""Test doubles that the tests and the benchmarks share: a Hugging Face hub look-alike on
loopback (`hub`) and a scripted worker runtime that answers `/health` but runs no inference
(`scripted_worker`, installed by `scripted_runtime`). Not part of hive (not packaged); it
lives outside `tests/` so that no benchmark imports the test suite."""
