"""Echoed values are bounded and carry no secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.model.text import (
    ECHO_LIMIT,
    clip,
    has_secret,
    redact_text,
    redact_url,
    show,
    show_text,
    show_url,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://alice:SECRET@host/m.gguf?token=Q",
            "https://alice:***@host/m.gguf?token=***",
        ),
        ("https://TOKEN123@host/m.gguf", "https://***@host/m.gguf"),
        (
            "https://b.s3.amazonaws.com/m.gguf?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&v=2",
            "https://b.s3.amazonaws.com/m.gguf?X-Amz-Signature=***&X-Amz-Credential=***&v=2",
        ),
        ("https://acct.blob.core.windows.net/c/m.gguf?sv=1&sig=XYZ", None),
        ("https://host/m.gguf?api_key=K&download=1", "https://host/m.gguf?api_key=***&download=1"),
        ("https://host/m.gguf?revision=main", "https://host/m.gguf?revision=main"),
        ("https://host/m.gguf", "https://host/m.gguf"),
        ("hf://org/repo/file.gguf@main", "hf://org/repo/file.gguf@main"),
        ("file:../models/x.gguf", "file:../models/x.gguf"),
    ],
)
def test_redact_url_hides_credentials_and_signed_values(url: str, shown: str | None) -> None:
    redacted = redact_url(url)
    if shown is not None:
        assert redacted == shown
    for secret in ("SECRET", "TOKEN123", "XYZ", "abc", "AK"):
        assert secret not in redacted
    assert has_secret(url) == (redacted != url)


def test_redact_text_finds_urls_inside_messages() -> None:
    message = "GET https://u:pw@example.test/a.gguf?sig=S failed: 403 (see http://x.test/ok)"
    assert redact_text(message) == (
        "GET https://u:***@example.test/a.gguf?sig=*** failed: 403 (see http://x.test/ok)"
    )


def test_redact_text_keeps_the_punctuation_after_a_url() -> None:
    assert redact_text("https://u:pw@h.test/m?token=T: access denied (401).") == (
        "https://u:***@h.test/m?token=***: access denied (401)."
    )
    assert redact_text("(from https://h.test/m?sig=S)") == "(from https://h.test/m?sig=***)"


def test_clip_and_show_bound_what_they_echo() -> None:
    assert clip("abc") == "abc"
    assert len(clip("x" * 1000)) == ECHO_LIMIT
    assert clip("x" * 1000).endswith("…")
    assert show("v1") == "'v1'"
    assert show(10**5000).startswith("<int")


def test_show_of_an_alias_bomb_is_cheap_and_bounded() -> None:
    # The shape PyYAML builds from nested anchors: each level nine references to the last.
    value: list[object] = ["lol"] * 9
    for _ in range(12):  # 9**13 items once expanded: never walked
        value = [value] * 9
    shown = show(value)
    assert len(shown) <= ECHO_LIMIT
    assert shown.startswith("[[[[")
    assert shown.endswith("…")


def test_show_of_a_recursive_value_terminates() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert len(show(loop)) <= ECHO_LIMIT


@given(st.text())
def test_clip_never_exceeds_the_limit(text: str) -> None:
    assert len(clip(text)) <= ECHO_LIMIT
    assert len(show(text)) <= ECHO_LIMIT


def test_show_url_redacts_then_clips_and_names_paths_too() -> None:
    long = "https://alice:S3CR3T@h.test/" + "a" * 5000 + "?token=T0K3N"
    shown = show_url(long)
    assert len(shown) == ECHO_LIMIT and shown.endswith("…")
    assert shown.startswith("https://alice:***@h.test/aaa")
    # Redacted before it is cut: a cut inside the user info must not leave it readable.
    assert "S3CR3T" not in show_url("https://alice:S3CR3T@h.test/m.gguf", 24)
    assert show_url(Path("/srv/models/x.gguf")) == "/srv/models/x.gguf"
    assert show_url("https://h.test/m.gguf?token=T") == "https://h.test/m.gguf?token=***"


def test_show_text_redacts_every_url_and_clips() -> None:
    text = "GET https://u:pw@h.test/m?sig=S failed: " + "x" * 5000
    shown = show_text(text)
    assert len(shown) == ECHO_LIMIT
    assert shown.startswith("GET https://u:***@h.test/m?sig=*** failed: xxx")


def test_show_redacts_a_long_credential_before_it_cuts() -> None:
    """A userinfo that runs past the displayed part (a JWT as the password) is hidden: the
    cut comes after the redaction, never between the secret and its `@`."""
    token = "eyJhbGciOi" + "S" * 300
    value = f"https://oauth2:{token}@git.example.test/m.gguf\n"
    shown = show(value)
    assert "SSSS" not in shown
    assert shown.startswith("'https://oauth2:***@git.example.test/m.gguf")


def test_show_hides_a_url_cut_by_its_window() -> None:
    """Past the window (longer than any value hive accepts), a URL that the window cuts
    is hidden whole after its scheme."""
    value = "x" * 8180 + "https://user:" + "P" * 100 + "@h.test/"
    assert "PPP" not in show([value], limit=10_000)


HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://host/{HF}/m.gguf", "https://host/***/m.gguf"),
        (f"https://host/m.gguf#{HF}", "https://host/m.gguf#***"),
        (f"https://host/m.gguf?{HF}", "https://host/m.gguf?***"),
        (f"https://host/m.gguf?access={HF}", "https://host/m.gguf?access=***"),
        (f"hf://org/repo/m.gguf?x={HF}", "hf://org/repo/m.gguf?x=***"),
        (f"file:/models/{HF}.gguf", "file:/models/***.gguf"),
        ("https://host/hf_model.gguf", "https://host/hf_model.gguf"),
    ],
)
def test_a_hugging_face_token_is_hidden_wherever_it_stands(url: str, shown: str) -> None:
    """rbee's users paste HF tokens into URLs in every place (the path of a mirror, a
    query without a name, a fragment): a token is recognised by its shape."""
    assert redact_url(url) == shown
    assert redact_text(f"GET {url} failed") == f"GET {shown} failed"
    assert HF not in show(url)
    assert redact_text(f"the token {HF} was refused") == "the token *** was refused"
