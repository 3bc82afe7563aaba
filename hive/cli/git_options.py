"""`hive serve`'s git options: each `--git URL` starts a source; the `--git-ref`,
`--git-path`, `--git-interval`, `--git-name`, `--git-allow-empty` and
`--git-webhook-secret-file` after it apply to
that source (before any --git they are an error)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

GIT_FIELDS = {
    "--git-ref": "ref",
    "--git-path": "path",
    "--git-interval": "interval",
    "--git-name": "name",
    "--git-allow-empty": "allow_empty",
    "--git-webhook-secret-file": "webhook_secret_file",
}


class _NewSource(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sources = list(getattr(namespace, "git", None) or [])
        sources.append({"url": values})
        namespace.git = sources


class _SourceOption(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sources = getattr(namespace, "git", None)
        if not sources:
            parser.error(f"{option_string} applies to the --git before it; give --git URL first")
        field = GIT_FIELDS[str(option_string)]
        if field in sources[-1]:
            parser.error(f"{option_string} is given twice for one --git")
        sources[-1][field] = True if self.nargs == 0 else values


def add_git_options(serve: argparse.ArgumentParser) -> None:
    git = serve.add_argument_group(
        "git sources", "each --git starts a source; the options after it apply to it"
    )
    git.add_argument(
        "--git",
        action=_NewSource,
        metavar="URL",
        help="a git repository of manifests (file://, https://, ssh, git://; repeatable)",
    )
    git.add_argument(
        "--git-ref",
        action=_SourceOption,
        metavar="REF",
        help="a branch, a tag, a full commit SHA or 'semver:RANGE' (default: the remote's HEAD)",
    )
    git.add_argument(
        "--git-path", action=_SourceOption, metavar="DIR", help="the manifests' directory in it"
    )
    git.add_argument(
        "--git-interval",
        action=_SourceOption,
        metavar="DURATION",
        help="time between fetches: seconds or 30s, 5m, 1h (default 60s)",
    )
    git.add_argument(
        "--git-name",
        action=_SourceOption,
        metavar="NAME",
        help="the source's name, git:NAME (default: the URL's last part)",
    )
    git.add_argument(
        "--git-allow-empty",
        action=_SourceOption,
        nargs=0,
        help="let a commit remove every record of the source (default: refused)",
    )
    git.add_argument(
        "--git-webhook-secret-file",
        action=_SourceOption,
        metavar="PATH",
        help="a file holding the secret the git host signs push notifications with "
        "(POST /v1/hooks/NAME, X-Hub-Signature-256); read at start, never shown",
    )
