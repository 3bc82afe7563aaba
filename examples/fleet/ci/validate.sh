#!/bin/sh
# What CI runs on every pull request of the fleet repository (docs/gitops.md):
#   1. every manifest valid, and what each class of hive would apply;
#   2. where a hive is reachable (HIVE_DIFF_URLS, with HIVE_TOKEN), what the merge would
#      change on it.
# Exit 2 when a manifest is invalid or a hive cannot be asked; differences alone are shown,
# not failed on (they are what the pull request is for).
set -eu
cd "$(dirname "$0")/.."
HIVE=${HIVE:-hive}

# One line per class of hive: its labels as `hive serve --label` gives them. Add
# hive.name=... for a record selected by name (the canary).
CLASSES="
gpu=a,zone=eu,hive.name=node-a1
gpu=a,zone=eu
gpu=b,zone=eu
gpu=b,zone=us
zone=eu
"
# fleet/.hiveignore leaves drafts/ out: hive validate, plan and diff read it, as the git
# source does, so they see what the hives apply. Drafts are validated on their own.
"$HIVE" validate fleet          # every file the hives apply: exit 2 on any problem
"$HIVE" validate fleet/drafts   # and the drafts, reviewed before they move out
for labels in $CLASSES; do
    echo "--- a hive with labels $labels"
    "$HIVE" validate fleet --labels "$labels"
done

status=0
for url in ${HIVE_DIFF_URLS:-}; do
    echo "--- diff with $url"
    # exit 0 no difference, 1 differences, 2 errors (a bad manifest, unreachable, 401)
    rc=0
    "$HIVE" diff fleet --url "$url" --source git:fleet || rc=$?
    if [ "$rc" -ge 2 ]; then status=2; fi
done
exit $status
