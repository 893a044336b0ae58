#!/bin/sh
# Pull the export (resumes if interrupted), distill a student when none is published, then serve.
set -eu
gdrec-consumer pull
if [ ! -f "${GDREC_CONSUMER_DATA_DIR}/models/current.json" ]; then
    # shellcheck disable=SC2086
    gdrec-consumer distill --no-progress ${GDREC_DISTILL_ARGS:-}
fi
exec gdrec-consumer serve
