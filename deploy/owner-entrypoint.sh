#!/bin/sh
# The owner's container. With no arguments: train on the read-only raw data at $GDREC_OWNER_DATA_DIR when the
# artifacts volume has no finished export (a rerun resumes the unfinished stages), then serve the export API. With
# arguments: that gdrec-owner command, e.g. `evaluate --consumer http://consumer:8200`.
# Secrets come from files, never from the container's environment (`docker inspect` shows it): gdrec-owner reads
# its HMAC secret from /run/secrets/gdrec_owner_secret (compose `secrets:`) or $GDREC_OWNER_SECRET_FILE itself;
# this script reads the consumer's API key, which `evaluate` sends, the same way into the command's own environment.
# Nothing here prints a secret. Keys: `gdrec-owner keys add` (printed once).
set -eu

# file_env NAME: unless NAME is set, export NAME with the content of the file named by NAME_FILE, else of
# $GDREC_OWNER_SECRETS_DIR/<name in lower case> (default /run/secrets) when that file exists. Both NAME and NAME_FILE
# set is an error; so is a NAME_FILE that cannot be read.
file_env() {
    name=$1
    eval "current=\${$name:-}"
    eval "file=\${${name}_FILE:-}"
    if [ -n "$current" ] && [ -n "$file" ]; then
        echo "error: both $name and ${name}_FILE are set: set only one of them" >&2
        exit 2
    fi
    if [ -n "$current" ]; then
        return 0
    fi
    if [ -z "$file" ]; then
        file="${GDREC_OWNER_SECRETS_DIR:-/run/secrets}/$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]')"
        [ -f "$file" ] || return 0
    fi
    if [ ! -r "$file" ] || [ -d "$file" ]; then
        echo "error: ${name}: cannot read $file" >&2
        exit 2
    fi
    # the value, with the trailing newlines removed by the command substitution
    current=$(cat "$file")
    if [ -n "$current" ]; then
        export "$name=$current"
    fi
    unset current
}

file_env GDREC_OWNER_CONSUMER_KEY

if [ "$#" -gt 0 ]; then
    exec gdrec-owner "$@"
fi
if [ ! -f "${GDREC_OWNER_ARTIFACTS_DIR}/stages/export/stage.json" ]; then
    # shellcheck disable=SC2086 # GDREC_TRAIN_ARGS is a list of options
    gdrec-owner train --dataset "${GDREC_DATASET:-ml-100k}" --consumer-id "${GDREC_CONSUMER_ID:-consumer}" \
        --no-progress ${GDREC_TRAIN_ARGS:-}
fi
exec gdrec-owner serve
