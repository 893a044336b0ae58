#!/bin/sh
# The consumer's container. With no arguments: pull the export (resumes if interrupted), distill a student when
# none is published, then serve. With arguments: that gdrec-consumer command, e.g. `status`.
# Keys come from files, never from the container's environment (`docker inspect` shows it): gdrec-consumer reads
# the owner-issued key and its own API and admin keys from /run/secrets/gdrec_consumer_owner_key,
# gdrec_consumer_api_key and gdrec_consumer_admin_key (compose `secrets:`), or from the files named by
# $GDREC_CONSUMER_OWNER_KEY_FILE, ... itself, and refuses to start in production without strong ones. Nothing here
# reads or prints a key.
set -eu
if [ "$#" -gt 0 ]; then
    exec gdrec-consumer "$@"
fi
gdrec-consumer pull
if [ ! -f "${GDREC_CONSUMER_DATA_DIR}/models/current.json" ]; then
    # shellcheck disable=SC2086 # GDREC_DISTILL_ARGS is a list of options
    gdrec-consumer distill --no-progress ${GDREC_DISTILL_ARGS:-}
fi
exec gdrec-consumer serve
