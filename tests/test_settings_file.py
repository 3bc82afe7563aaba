"""`hive serve --config FILE`: settings in one YAML file, located problems, the order of
the layers (file, then HIVE_* variables, then flags), and a real `hive serve` whose git
source comes from the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hive.errors import ValidationFailed
from hive.settings import Settings
from tests.conftest import Hive, model_yaml, run_hive
from tests.sources.test_git import Repo

TOKEN = "0123456789abcdef0123"


def write(tmp_path: Path, text: str, *, mode: int = 0o600) -> Path:
    path = tmp_path / "hive.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        Settings.from_env(config=path)
    return caught.value.problems


def test_a_file_gives_settings_by_their_flag_names(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("s" * 32)
    path = write(
        tmp_path,
        "port: 7999\n"
        "resync-interval: 10\n"
        "max_downloads: 3\n"
        "desired: manifests\n"
        "labels: {gpu: a, zone: eu}\n"
        "git:\n"
        "  - url: file:///srv/fleet.git\n"
        "    ref: main\n"
        "    path: hives/\n"
        "    interval: 5m\n"
        "    allow-empty: true\n"
        "    webhook-secret-file: hook.secret\n"
        "  - {url: 'https://example.invalid/org/other.git', name: other, interval: 90}\n",
    )
    settings = Settings.from_env(config=path)
    assert settings.port == 7999 and settings.resync_interval == 10
    assert settings.max_downloads == 3
    assert settings.desired == (tmp_path / "manifests",)  # relative to the file
    assert settings.labels == {"gpu": "a", "zone": "eu"}
    fleet, other = settings.git
    assert (fleet.source_name, fleet.ref, fleet.path, fleet.interval) == (
        "fleet",
        "main",
        "hives",
        300,
    )
    assert fleet.allow_empty and fleet.webhook_secret_file == secret
    assert (other.source_name, other.interval) == ("other", 90)


def test_variables_override_the_file_and_flags_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "port: 7001\nresync-interval: 7\nlabels: {gpu: a, zone: eu}\n"
        "git: [{url: 'file:///a/fleet.git'}]\n",
    )
    monkeypatch.setenv("HIVE_PORT", "7002")
    monkeypatch.setenv("HIVE_LABELS", "zone=us,rack=r1")
    settings = Settings.from_env(
        config=path, resync_interval=3.0, labels=["rack=r2"], git=({"url": "file:///b/extra"},)
    )
    assert settings.port == 7002  # the variable over the file
    assert settings.resync_interval == 3  # the flag over the file
    assert settings.labels == {"gpu": "a", "zone": "us", "rack": "r2"}  # key by key
    assert [s.source_name for s in settings.git] == ["fleet", "extra"]  # they add up
    monkeypatch.setenv("HIVE_CONFIG", str(path))
    assert Settings.from_env().resync_interval == 7  # HIVE_CONFIG names the file


def test_every_problem_is_located_with_what_to_do(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "port: 7001\n"
        "resync-intervall: 10\n"
        "git:\n"
        "  - url: file:///x\n"
        "    naem: x\n"
        "  - just a string\n",
    )
    found = problems(path)
    assert f"{path}:2: resync-intervall: unknown setting (did you mean resync-interval?)" in found
    assert f"{path}:5: git[0].naem: unknown setting (did you mean name?)" in found
    assert any(p.startswith(f"{path}:6: git[1]: must be a mapping") for p in found), found
    bad = write(tmp_path, "port: 7001\ngit:\n  - url: file:///x\n    interval: 5d\n")
    (only,) = problems(bad)
    assert only.startswith(f"{bad}:4: git[0].interval: '5d' is not a duration"), only
    typed = write(tmp_path, "labels: {gpu: a}\nresync_interval: soon\n")
    (only,) = problems(typed)
    assert only.startswith(f"{typed}:2: resync_interval: "), only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- 1\n", "must be a YAML mapping of settings"),
        ("port: 1\n---\nport: 2\n", "holds several documents"),
        ("", "holds no document"),
        ("port: [1\n", "malformed YAML"),
        ("port: 1\nport: 2\n", "duplicate key"),
        # An alias bomb is refused before anything is built.
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcdef", "bcdefg", strict=True)
            ),
            "aliases expand to more than",
        ),
    ],
)
def test_a_file_that_is_not_one_mapping_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(write(tmp_path, text))
    assert any(expected in p for p in found), found


def test_a_token_in_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    text = f"token: {TOKEN}\n"
    (only,) = problems(write(tmp_path, text, mode=0o644))
    assert "chmod 600" in only and TOKEN not in only
    assert Settings.from_env(config=write(tmp_path, text, mode=0o600)).token == TOKEN


def test_serve_names_the_files_problems_and_does_not_start(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 7001\nresync-intervall: 10\ngit: [{url: 'file:///x', naem: y}]\n")
    result = run_hive("serve", "--home", str(tmp_path / "home"), "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hive: the settings file {path} has 2 problems:",
        f"  {path}:2: resync-intervall: unknown setting (did you mean resync-interval?)",
        f"  {path}:3: git[0].naem: unknown setting (did you mean name?)",
    ]
    assert not (tmp_path / "home").exists()
    missing = run_hive("serve", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "cannot read it: No such file" in missing.stderr
    twice = write(tmp_path, "git: [{url: 'file:///a/fleet'}]\n")
    clash = run_hive("serve", "--config", str(twice), "--git", "file:///b/fleet")
    assert clash.returncode == 2 and "--git-name" in clash.stderr, clash.stderr


def test_serve_takes_its_git_source_from_the_file(
    hive_factory: Callable[..., Hive], tmp_path: Path, tiny_model: Path
) -> None:
    repo = Repo(tmp_path / "r")
    sha = repo.commit({"fleet/m.yaml": model_yaml("from-file", f"file:{tiny_model}")})
    path = write(
        tmp_path,
        f"labels: {{gpu: a}}\ngit:\n  - url: {repo.url}\n    path: fleet\n    interval: 200ms\n"
        "    name: fleet\n",
    )
    hive = hive_factory(desired=[], extra_args=["--config", str(path)])
    hive.wait_phase("from-file", "Available")
    status = hive.get("/v1/status")
    assert status["labels"]["gpu"] == "a"
    (source,) = [s for s in status["sources"] if s["name"] == "git:fleet"]
    assert source["git"]["lastAppliedRevision"] == f"HEAD@sha1:{sha}"
    assert source["git"]["interval"] == 0.2


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("port: 1\nhome: {a: 1}\n", 2, "home"),
        ("port: 1\nhome:\n", 2, "home"),
        ("desired: [ok, {x: 1}]\n", 1, "desired"),
        (
            "git:\n  - url: file:///x\n    webhook-secret-file: [1]\n",
            3,
            "git[0].webhook-secret-file",
        ),
    ],
)
def test_a_path_setting_of_the_wrong_shape_is_located(
    tmp_path: Path, text: str, line: int, field: str
) -> None:
    (only,) = problems(write(tmp_path, text))
    assert only.startswith(f"{tmp_path / 'hive.yaml'}:{line}: {field}"), only


def test_a_home_under_the_users_home_is_expanded(tmp_path: Path) -> None:
    settings = Settings.from_env(config=write(tmp_path, "home: ~/hive-home\n"))
    assert settings.home == Path.home() / "hive-home"
