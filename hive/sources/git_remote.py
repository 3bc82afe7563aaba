"""How the git source hands a remote to `git`: credentials written in an http(s) URL
(`https://user:token@host/...`) are taken out of it and given to git through its
environment only, so that no command line (`ps`, /proc/<pid>/cmdline) and no message of
git's holds them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

#: The environment variables the credential helper reads.
USER_VAR = "HIVE_GIT_USERNAME"
PASSWORD_VAR = "HIVE_GIT_PASSWORD"
#: A credential helper (a shell snippet, as git runs a helper starting with '!') that
#: answers git's `get` with the two variables above, and ignores `store` and `erase`. The
#: values are printed by the shell from its environment: they are on no command line.
HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "$' + USER_VAR + '" "$' + PASSWORD_VAR + '"; }; f'
)


@dataclass(frozen=True)
class Remote:
    """The URL git is given, and what git's environment gets besides hive's own."""

    url: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


def remote(url: str, *, environ: Mapping[str, str] | None = None) -> Remote:
    """`url` as git is given it: an http(s) URL without its user and password, which its
    credential helper (`credential.helper`, set through GIT_CONFIG_COUNT/KEY/VALUE after
    any such entries `environ` already holds) hands git from the environment. Every other
    URL as it is (an ssh user name is no secret; ssh keys and GIT_SSH_COMMAND, git's own
    helpers for a URL without credentials, work as git has them)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return Remote(url=url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    base = dict(environ if environ is not None else os.environ)
    try:
        count = int(base.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    # An empty helper first empties the list git has from its config files: the URL's
    # credentials are the ones meant, and no other helper is asked to store them.
    env = {
        f"GIT_CONFIG_KEY_{count}": "credential.helper",
        f"GIT_CONFIG_VALUE_{count}": "",
        f"GIT_CONFIG_KEY_{count + 1}": "credential.helper",
        f"GIT_CONFIG_VALUE_{count + 1}": HELPER,
        "GIT_CONFIG_COUNT": str(count + 2),
        USER_VAR: unquote(user),
        PASSWORD_VAR: unquote(password),
    }
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return Remote(url=bare, env=env)
