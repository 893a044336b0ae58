#!/usr/bin/env bash
# `make compose-smoke`: both GD-REC containers up for real on a Docker engine, end to end, then torn down.
#   1. tools: docker, docker-compose (or `docker compose`), debootstrap; installed with apt when missing (as root)
#   2. engine: the one that answers, else dockerd started here (and stopped at the end)
#   3. base image: python:3.11-slim when it can be pulled, else a Debian bookworm base made with debootstrap
#   4. images: `docker-compose build` with that base (from ./wheelhouse with no index when it exists)
#   5. secrets: fresh random ones in a temporary folder (mounted through a temporary override of the secret files)
#   6. owner up (trains on a tiny dataset: ml-100k from $GDREC_DATA_DIR with a few epochs, else a synthetic
#      users.dat written here), the consumer's key from `gdrec-owner keys add`, consumer up, both healthy
#   7. GET /v1/recommendations/{token} through the consumer's published port (a token from the owner's export)
#   8. `gdrec-owner audit boundary` on the live deployment: it must pass; then the consumer again with
#      deploy/compose.misconfigured.yml layered on: the audit must fail naming the rules it breaks
#   9. `down -v`, the temporary folder removed, the engine stopped when started here
# Prints the time of each stage and, last, one line saying what passed. Settings (environment):
#   GDREC_DATA_DIR        a folder with ml-100k/u.data (else the synthetic data set)
#   SMOKE_PROJECT         compose project name (default gdrecsmoke)
#   SMOKE_BASE            base image to build on (default: python:3.11-slim if pullable, else gdrec-base:bookworm)
#   SMOKE_DOCKERD_ARGS    arguments of a dockerd started here (default --storage-driver=vfs)
#   SMOKE_TRAIN_ARGS, SMOKE_DISTILL_ARGS   the owner's train and the consumer's distill options
#   TORCH_INDEX           passed to `make wheelhouse` when ./wheelhouse is missing (empty: pip's own configuration)
# No secret is printed: the keys go from file to file.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PROJECT=${SMOKE_PROJECT:-gdrecsmoke}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DEBIAN_BASE=gdrec-base:bookworm
TRAIN_ARGS=${SMOKE_TRAIN_ARGS:---teacher-epochs 2 --gd-epochs 1 --cgan-epochs 2}
DISTILL_ARGS=${SMOKE_DISTILL_ARGS:---epochs 2}
NICE=(nice -n 19)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gdrec-compose-smoke.XXXXXX")
chmod 700 "$WORK"
STARTED_DOCKERD=""
UP=""
CREATED_ENV=()
COMPOSE=()
STAGES=()
PASSED=()

say() { echo "[compose-smoke] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now() { date +%s; }
stage_start() { STAGE=$1; STAGE_T0=$(now); say "== $STAGE"; }
stage_end() { STAGES+=("$(printf '%-28s %5ss' "$STAGE" "$(($(now) - STAGE_T0))")"); }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$UP" ]; then
        if [ "$rc" -ne 0 ]; then
            say "logs of the failed run (last 40 lines each):"
            "${COMPOSE[@]}" logs --tail 40 >&2
        fi
        say "tearing down (down -v)"
        "${COMPOSE[@]}" down -v --remove-orphans > /dev/null 2>&1 || say "down -v failed: docker ps -a"
    fi
    for file in "${CREATED_ENV[@]}"; do rm -f "$file"; done
    rm -rf "$WORK"
    if [ -n "$STARTED_DOCKERD" ]; then
        say "stopping the dockerd started here (pid $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD" 2> /dev/null
        for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2> /dev/null || break; sleep 1; done
    fi
    if [ "${#STAGES[@]}" -gt 0 ]; then
        say "stage times:"
        printf '  %s\n' "${STAGES[@]}" >&2
    fi
    if [ "$rc" -eq 0 ]; then
        echo "compose-smoke PASSED: ${PASSED[*]}"
    else
        echo "compose-smoke FAILED (exit $rc) in stage '${STAGE:-setup}'; passed before it: ${PASSED[*]:-nothing}"
    fi
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------------- 1. tools
stage_start tools
missing=()
command -v docker > /dev/null || missing+=(docker.io)
command -v dockerd > /dev/null || missing+=(docker.io)
if ! command -v docker-compose > /dev/null && ! docker compose version > /dev/null 2>&1; then
    missing+=(docker-compose)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]})"
    say "installing with apt: ${missing[*]}"
    "${NICE[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -qq "${missing[@]}"
fi
if docker compose version > /dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
say "compose: $("${COMPOSE[@]}" version 2> /dev/null | head -1)"
COMPOSE+=(-p "$PROJECT" -f docker-compose.yml)
[ -x "$PYTHON" ] || die "no Python environment at $PYTHON for the audit: run make install (or set PYTHON)"
if ! "$PYTHON" -c "import docker" 2> /dev/null; then
    pin=$(grep -o '"docker==[^"]*"' pyproject.toml | head -1 | tr -d '"')
    say "installing the Docker SDK for the audit into $(dirname "$PYTHON")/..: $pin"
    "${NICE[@]}" "$PYTHON" -m pip install -q "$pin"
fi
stage_end

# ---------------------------------------------------------------------------------------------------- 2. engine
stage_start engine
if ! docker info > /dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and not root: start one"
    dockerd_log=${TMPDIR:-/tmp}/gdrec-smoke-dockerd.log  # outside $WORK: kept for a look after a failed start
    say "no Docker engine answers: starting dockerd ${SMOKE_DOCKERD_ARGS:---storage-driver=vfs} (log: $dockerd_log)"
    # shellcheck disable=SC2086 # a list of options
    nohup dockerd ${SMOKE_DOCKERD_ARGS:---storage-driver=vfs} > "$dockerd_log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
    docker info > /dev/null 2>&1 || die "dockerd did not answer within 60 s (see $dockerd_log)"
fi
say "engine: $(docker version --format '{{.Server.Version}}' 2> /dev/null)"
stage_end

# ---------------------------------------------------------------------------------------------------- 3. base
stage_start base-image
BASE=${SMOKE_BASE:-}
if [ -z "$BASE" ]; then
    if docker image inspect python:3.11-slim > /dev/null 2>&1 || timeout 120 docker pull -q python:3.11-slim > /dev/null 2>&1
    then
        BASE=python:3.11-slim
    else
        BASE=$DEBIAN_BASE
        say "python:3.11-slim cannot be pulled: building on $BASE (Debian bookworm, python 3.11)"
    fi
fi
if [ "$BASE" = "$DEBIAN_BASE" ] && ! docker image inspect "$BASE" > /dev/null 2>&1; then
    if ! command -v debootstrap > /dev/null; then
        [ "$(id -u)" -eq 0 ] || die "debootstrap is missing and not root"
        say "installing with apt: debootstrap"
        "${NICE[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -qq debootstrap
    fi
    say "making $BASE with debootstrap (a minute or two)"
    "${NICE[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
        "$WORK/rootfs" > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
    # the host's CA bundle: where a proxy re-signs TLS, pip inside the build trusts what the host trusts
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$WORK/rootfs" -c . | "${NICE[@]}" docker import - "$BASE" > /dev/null
    rm -rf "$WORK/rootfs"
fi
stage_end

# ---------------------------------------------------------------------------------------------------- 4. images
stage_start build
if ! ls wheelhouse/*.whl > /dev/null 2>&1; then
    say "no ./wheelhouse: making it (make wheelhouse)"
    "${NICE[@]}" make --no-print-directory wheelhouse ${TORCH_INDEX+TORCH_INDEX="$TORCH_INDEX"}
fi
for service in owner consumer; do
    [ -f "deploy/$service/.env" ] && continue
    cp "deploy/$service/.env.example" "deploy/$service/.env"
    CREATED_ENV+=("$REPO/deploy/$service/.env")
    say "deploy/$service/.env is missing: using its example for this run (removed at the end)"
done
"${NICE[@]}" "${COMPOSE[@]}" build --build-arg BASE="$BASE" > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; die "image build"; }
for service in owner consumer; do
    say "image $service: $(docker image inspect -f '{{.Size}}' "${PROJECT}_${service}" 2> /dev/null \
        || docker image inspect -f '{{.Size}}' "${PROJECT}-${service}" 2> /dev/null) bytes"
done
PASSED+=(build)
stage_end

# ---------------------------------------------------------------------------------------------------- 5. secrets
stage_start secrets
mkdir -m 700 "$WORK/secrets"
for name in gdrec_owner_secret gdrec_consumer_api_key gdrec_consumer_admin_key; do
    python3 -c 'import secrets; print(secrets.token_hex(32))' > "$WORK/secrets/$name"
done
: > "$WORK/secrets/gdrec_consumer_owner_key"
chmod 644 "$WORK/secrets"/*  # read by the containers' users (uids 10001, 10002) through their bind mounts

# the data set: ml-100k from GDREC_DATA_DIR, else a small synthetic users.dat (line u: count, then item ids)
if [ -n "${GDREC_DATA_DIR:-}" ] && [ -f "$GDREC_DATA_DIR/ml-100k/u.data" ]; then
    DATA_DIR=$GDREC_DATA_DIR
    DATASET=ml-100k
else
    DATA_DIR=$WORK/data
    DATASET=/data/synthetic/users.dat
    mkdir -p "$DATA_DIR/synthetic"
    python3 - "$DATA_DIR/synthetic/users.dat" <<'PY'
import random
import sys

rng = random.Random(7)
with open(sys.argv[1], "w") as out:
    for _ in range(300):
        items = rng.sample(range(400), rng.randint(12, 40))
        out.write(f"{len(items)} {' '.join(map(str, items))}\n")
PY
    chmod -R a+rX "$DATA_DIR"
    say "GDREC_DATA_DIR has no ml-100k/u.data: a synthetic users.dat (300 users, 400 items)"
fi
say "data: $DATASET from $DATA_DIR, mounted read-only; train options: $TRAIN_ARGS"
cat > "$WORK/compose.smoke.yml" <<EOF
# the smoke run's settings over docker-compose.yml: its own secret files, data and short training
services:
  owner:
    environment:
      GDREC_DATASET: "$DATASET"
      GDREC_TRAIN_ARGS: "$TRAIN_ARGS"
  consumer:
    environment:
      GDREC_DISTILL_ARGS: "$DISTILL_ARGS"
secrets:
EOF
for name in gdrec_owner_secret gdrec_owner_consumer_key gdrec_consumer_owner_key gdrec_consumer_api_key \
    gdrec_consumer_admin_key; do
    file=$name
    [ "$name" = gdrec_owner_consumer_key ] && file=gdrec_consumer_api_key
    printf '  %s:\n    file: %s\n' "$name" "$WORK/secrets/$file" >> "$WORK/compose.smoke.yml"
done
export GDREC_DATA_DIR=$DATA_DIR
COMPOSE+=(-f "$WORK/compose.smoke.yml")
stage_end

# ---------------------------------------------------------------------------------------------------- 6. up
wait_healthy() {  # service, seconds
    local id state
    id=$("${COMPOSE[@]}" ps -q "$1")
    for _ in $(seq "$2"); do
        state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
        case "$state" in
            "running healthy") return 0 ;;
            exited* | dead* | "running unhealthy") die "$1 is $state" ;;
        esac
        sleep 1
    done
    die "$1 not healthy after $2 s (state: $state)"
}

stage_start owner-up-and-train
UP=1
"${COMPOSE[@]}" up -d owner > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "owner up"; }
wait_healthy owner 3600
PASSED+=(owner-healthy)
stage_end

stage_start consumer-key
"${COMPOSE[@]}" exec -T owner /app/deploy/owner-entrypoint.sh keys add --consumer consumer \
    > "$WORK/secrets/gdrec_consumer_owner_key" 2> "$WORK/keys.log" || { cat "$WORK/keys.log" >&2; die "keys add"; }
[ -s "$WORK/secrets/gdrec_consumer_owner_key" ] || die "keys add printed no key"
say "$(cat "$WORK/keys.log")"
stage_end

stage_start consumer-up-pull-distill
"${COMPOSE[@]}" up -d consumer > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "consumer up"; }
wait_healthy consumer 3600
PASSED+=(consumer-healthy)
stage_end

# ---------------------------------------------------------------------------------------------------- 7. request
stage_start recommendation
"$PYTHON" - "$WORK/secrets" 8100 8200 <<'PY' || die "recommendation"
"""A token from the owner's export (with the consumer's owner-issued key), then its top-10 from the consumer."""
import json
import sys
import urllib.request
from pathlib import Path

secrets, owner_port, consumer_port = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def get(url: str, key_file: str) -> dict:
    key = (secrets / key_file).read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


page = get(f"http://127.0.0.1:{owner_port}/v1/export/users?limit=1", "gdrec_consumer_owner_key")
token = page["users"][0]["token"]
answer = get(f"http://127.0.0.1:{consumer_port}/v1/recommendations/{token}?k=10", "gdrec_consumer_api_key")
items = answer["items"]
assert items and len(items) == 10, f"expected 10 recommendations, got: {json.dumps(answer)[:300]}"
print(f"[compose-smoke] GET /v1/recommendations/{token[:8]}... -> {len(items)} items", file=sys.stderr)
PY
PASSED+=(recommendation)
stage_end

# ---------------------------------------------------------------------------------------------------- 8. audit
stage_start boundary-audit
"$PYTHON" -m data_owner.cli audit boundary --project "$PROJECT" --out "$WORK/audit" > "$WORK/audit.out" 2>&1 \
    || { cat "$WORK/audit.out" >&2; die "the boundary audit of the shipped deployment failed"; }
cat "$WORK/audit.out" >&2
PASSED+=(boundary-audit)
stage_end

stage_start misconfigured-audit
"${COMPOSE[@]}" -f deploy/compose.misconfigured.yml up -d --no-deps consumer > "$WORK/up.log" 2>&1 \
    || { cat "$WORK/up.log" >&2; die "consumer up with deploy/compose.misconfigured.yml"; }
for _ in $(seq 60); do
    [ "$(docker inspect -f '{{.State.Status}}' "$("${COMPOSE[@]}" ps -q consumer)")" = running ] && break
    sleep 1
done
set +e
"$PYTHON" -m data_owner.cli audit boundary --project "$PROJECT" --out "$WORK/audit-misconfigured" \
    > "$WORK/audit.out" 2>&1
audit_rc=$?
set -e
cat "$WORK/audit.out" >&2
[ "$audit_rc" -eq 1 ] || die "the audit of deploy/compose.misconfigured.yml exited $audit_rc, not 1"
for rule in raw-data-owner-only no-shared-volume consumer-networks consumer-cannot-see-raw-data; do
    grep -q "error: the data boundary is violated: .*$rule" "$WORK/audit.out" \
        || die "the audit of deploy/compose.misconfigured.yml did not name $rule"
done
PASSED+=(misconfigured-audit-caught)
stage_end
