#!/bin/sh
# Train on the read-only raw data at $GDREC_OWNER_DATA_DIR when the artifacts volume has no finished export
# (a rerun resumes the unfinished stages), then serve the export API. Keys: `gdrec-owner keys add` (printed once).
set -eu
if [ ! -f "${GDREC_OWNER_ARTIFACTS_DIR}/stages/export/stage.json" ]; then
    # shellcheck disable=SC2086 # GDREC_TRAIN_ARGS is a list of options
    gdrec-owner train --dataset "${GDREC_DATASET:-ml-100k}" --consumer-id "${GDREC_CONSUMER_ID:-consumer}" \
        --no-progress ${GDREC_TRAIN_ARGS:-}
fi
exec gdrec-owner serve
