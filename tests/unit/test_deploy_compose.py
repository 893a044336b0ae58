"""Static checks of docker-compose.yml and the Dockerfiles (no Docker engine runs here): the raw-data volume is
mounted read-only into the owner and reaches no other service, the consumer has only its own volume, the only
network it shares with the owner is internal, both have health checks, settings come from uncommitted env files
with committed examples, both run in production, every secret is a git-ignored file mounted with compose `secrets:`
under the name the service reads (never an environment variable), the file parses for Compose v1.29 and v2, and the
images run as a non-root user on a slim Python base. The entrypoints run here with stand-in commands: they read
the owner's evaluation key from its file and never print a secret. The boundary rules that a compose file answers
(data_owner.boundary) pass on docker-compose.yml and fail on deploy/compose.misconfigured.yml; the images install
the hash-pinned lock into a virtual environment and hold only their own service's code."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from data_owner.boundary import STATIC_RULES, Deployment, audit, merge_compose
from data_owner.settings import OwnerSettings
from model_consumer.settings import ConsumerSettings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
SECRETS_DIR = REPO / "deploy" / "secrets"
# the secrets each service may get, and who reads them (the settings class, or the entrypoint script)
OWNER_SECRETS = {"gdrec_owner_secret": "settings", "gdrec_owner_consumer_key": "entrypoint"}
CONSUMER_SECRETS = {"gdrec_consumer_owner_key": "settings", "gdrec_consumer_api_key": "settings",
                    "gdrec_consumer_admin_key": "settings"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: dict) -> list[dict]:
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # short syntax source:target[:mode]
            parts = volume.split(":")
            result.append({"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"],
                           "type": "volume" if re.fullmatch(r"[\w-]+", parts[0]) else "bind"})
        else:
            result.append(volume)
    return result


def test_raw_data_reaches_the_owner_only_and_read_only(compose):
    owner = mounts(compose["services"]["owner"])
    raw = [m for m in owner if m["target"] == "/data"]
    assert len(raw) == 1 and raw[0]["type"] == "bind" and raw[0]["read_only"] is True
    assert "GDREC_DATA_DIR" in raw[0]["source"]
    assert compose["services"]["owner"]["environment"]["GDREC_OWNER_DATA_DIR"] == "/data"
    assert {m["source"] for m in owner if m["type"] == "volume"} == {"owner-artifacts"}
    for name, service in compose["services"].items():
        if name != "owner":
            assert not [m for m in mounts(service) if m["source"] == raw[0]["source"] or m["target"] == "/data"], name


def test_the_consumer_has_only_its_own_volume_and_no_raw_data_setting(compose):
    consumer = compose["services"]["consumer"]
    assert mounts(consumer) == [{"type": "volume", "source": "consumer-data", "target": "/consumer-data"}]
    assert not [m for m in mounts(consumer) if m["type"] == "bind"]
    assert not [key for key in consumer.get("environment", {}) if "DATA_DIR" in key and "CONSUMER" not in key]
    assert set(compose["volumes"]) == {"owner-artifacts", "consumer-data"}


def test_the_consumer_shares_only_an_internal_network_with_the_owner(compose):
    services, networks = compose["services"], compose["networks"]
    shared = set(services["owner"]["networks"]) & set(services["consumer"]["networks"])
    assert shared == {"export"} and networks["export"]["internal"] is True
    for network in set(services["consumer"]["networks"]) - shared:
        users = [name for name, s in services.items() if network in s["networks"]]
        assert users == ["consumer"], f"network {network} also reaches {users}"
    assert services["consumer"]["environment"]["GDREC_CONSUMER_OWNER_URL"] == "http://owner:8100"
    assert services["consumer"]["depends_on"]["owner"]["condition"] == "service_healthy"


def git_ignored(path: Path) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO).returncode == 0


def test_health_checks_and_settings_from_uncommitted_env_files(compose):
    for name, port in (("owner", 8100), ("consumer", 8200)):
        service = compose["services"][name]
        assert f"127.0.0.1:{port}/ready" in " ".join(service["healthcheck"]["test"])
        env_file = REPO / service["env_file"]
        example = env_file.with_name(env_file.name + ".example")
        assert example.is_file(), example
        assert git_ignored(env_file), f"{env_file} would be committed: it must be git-ignored"
        assigned = re.findall(r"^\s*(\w+)=", example.read_text(), re.M)
        assert assigned and not [v for v in assigned if re.search("SECRET|KEY", v)], f"{example} names a secret"


def test_both_services_run_in_production(compose):
    for name in ("owner", "consumer"):
        variable = f"GDREC_{name.upper()}_ENVIRONMENT"
        assert compose["services"][name]["environment"][variable] == "production"
        dockerfile = (REPO / "deploy" / f"Dockerfile.{name}").read_text()
        assert re.search(rf"^ENV [^#]*\b{variable}=production\b", dockerfile, re.M), f"Dockerfile.{name}"


def test_no_secret_is_an_environment_variable(compose):
    for name in ("owner", "consumer"):
        service = compose["services"][name]
        environment = service["environment"]
        assert isinstance(environment, dict)
        assert not [key for key in environment if re.search("SECRET|KEY", key)], name
        dockerfile = (REPO / "deploy" / f"Dockerfile.{name}").read_text()
        env_lines = " ".join(re.findall(r"^ENV (.*)$", dockerfile.replace("\\\n", " "), re.M))
        assert "GDREC_" in env_lines and not re.search(r"\w*(SECRET|KEY)\w*=", env_lines), f"Dockerfile.{name}"
        assert not re.search(r"^ARG \w*(SECRET|KEY)", dockerfile, re.M)  # build arguments stay in the image history


def test_secrets_are_git_ignored_files_mounted_where_each_service_reads_them(compose):
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}, f"secret {name} must be a file (not external, not an environment variable)"
        path = (REPO / secret["file"]).resolve()
        assert path.parent == SECRETS_DIR, f"secret {name} lies outside deploy/secrets/"
        assert git_ignored(path), f"{path} would be committed: it must be git-ignored"
    tracked = subprocess.run(["git", "ls-files", str(SECRETS_DIR)], cwd=REPO, capture_output=True, text=True).stdout
    assert tracked.split() in ([], ["deploy/secrets/.gitignore"]), f"committed secrets: {tracked}"
    owner, consumer = (compose["services"][name].get("secrets", []) for name in ("owner", "consumer"))
    assert all(isinstance(entry, str) for entry in owner + consumer)  # mounted at /run/secrets/<name>
    assert set(owner) == set(OWNER_SECRETS) and set(consumer) == set(CONSUMER_SECRETS)
    assert set(owner) | set(consumer) == set(declared)
    hmac_secret = declared["gdrec_owner_secret"]["file"]
    assert hmac_secret not in {declared[name]["file"] for name in consumer}, "the consumer gets the HMAC secret"
    # the owner scores the consumer with the consumer's own API key: one file, two names
    assert declared["gdrec_owner_consumer_key"]["file"] == declared["gdrec_consumer_api_key"]["file"]


def test_the_services_read_the_mounted_secrets(compose, tmp_path, monkeypatch):
    """A folder laid out as compose mounts /run/secrets: each settings class finds its secrets there by name."""
    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    values = {name: secrets.token_hex(32) for name in compose["secrets"]}
    for folder, names in (("owner", OWNER_SECRETS), ("consumer", CONSUMER_SECRETS)):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_text(values[name] + "\n")
    owner = OwnerSettings(_secrets_dir=tmp_path / "owner")
    assert owner.environment == "production" and owner.secret_bytes() == values["gdrec_owner_secret"].encode()
    consumer = ConsumerSettings(_secrets_dir=tmp_path / "consumer")
    for name in CONSUMER_SECRETS:
        field = name.removeprefix("gdrec_consumer_")
        assert getattr(consumer, field).get_secret_value() == values[name], name
    assert [name for name, reader in OWNER_SECRETS.items() if reader == "entrypoint"] == ["gdrec_owner_consumer_key"]


def test_the_compose_file_suits_compose_v1_and_v2(compose):
    # docker-compose 1.29 validates against a schema without a top-level `name:`; v2 accepts both
    assert set(compose) <= {"version", "services", "networks", "volumes", "secrets", "configs"}, sorted(compose)
    assert not [key for key in compose if key.startswith("x-")]


# ---------------------------------------------------------------------------------------------------- entrypoints


def stand_in(folder: Path, command: str) -> Path:
    """A fake `command` on PATH that records its arguments and the owner's evaluation key, and prints nothing."""
    folder.mkdir(exist_ok=True)
    script = folder / command
    script.write_text('#!/bin/sh\nprintf \'%s\\n\' "$*" >> "$CALLS"\n'
                      'printf \'%s\' "${GDREC_OWNER_CONSUMER_KEY:-}" > "$CALLS.key"\n')
    script.chmod(0o755)
    return folder


def run_entrypoint(name: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GDREC_")}
    path = f"{stand_in(tmp_path / 'bin', f'gdrec-{name}')}{os.pathsep}{base['PATH']}"
    return subprocess.run(["sh", str(REPO / "deploy" / f"{name}-entrypoint.sh"), *args], capture_output=True,
                          text=True, env={**base, "PATH": path, "CALLS": str(tmp_path / "calls"), **env}, timeout=30)


needs_sh = pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")


@needs_sh
def test_the_owner_entrypoint_reads_the_evaluation_key_from_its_file(tmp_path):
    key = secrets.token_hex(32)
    (tmp_path / "run-secrets").mkdir()
    (tmp_path / "run-secrets" / "gdrec_owner_consumer_key").write_text(key + "\n")
    done = run_entrypoint("owner", tmp_path, "evaluate", "--consumer", "http://consumer:8200",
                          GDREC_OWNER_SECRETS_DIR=str(tmp_path / "run-secrets"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text() == "evaluate --consumer http://consumer:8200\n"
    assert (tmp_path / "calls.key").read_text() == key  # the trailing newline stripped
    assert key not in done.stdout + done.stderr
    other = tmp_path / "other-key"
    other.write_text(key[::-1])
    done = run_entrypoint("owner", tmp_path, "keys", "list", GDREC_OWNER_CONSUMER_KEY_FILE=str(other),
                          GDREC_OWNER_SECRETS_DIR=str(tmp_path / "run-secrets"))
    assert done.returncode == 0 and (tmp_path / "calls.key").read_text() == key[::-1]


@needs_sh
def test_the_owner_entrypoint_refuses_a_key_set_twice_or_unreadable_without_printing_it(tmp_path):
    key = secrets.token_hex(32)
    (tmp_path / "key").write_text(key)
    done = run_entrypoint("owner", tmp_path, "serve", GDREC_OWNER_CONSUMER_KEY=key,
                          GDREC_OWNER_CONSUMER_KEY_FILE=str(tmp_path / "key"))
    assert done.returncode == 2 and "both GDREC_OWNER_CONSUMER_KEY and GDREC_OWNER_CONSUMER_KEY_FILE" in done.stderr
    assert key not in done.stdout + done.stderr and not (tmp_path / "calls").exists()
    done = run_entrypoint("owner", tmp_path, "serve", GDREC_OWNER_CONSUMER_KEY_FILE=str(tmp_path / "missing"))
    assert done.returncode == 2 and "GDREC_OWNER_CONSUMER_KEY: cannot read" in done.stderr


@needs_sh
def test_the_entrypoints_without_arguments_train_or_pull_then_serve(tmp_path):
    (tmp_path / "run-secrets").mkdir()
    done = run_entrypoint("owner", tmp_path, GDREC_OWNER_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
                          GDREC_OWNER_SECRETS_DIR=str(tmp_path / "run-secrets"), GDREC_TRAIN_ARGS="--gd-epochs 2")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "train --dataset ml-100k --consumer-id consumer --no-progress --gd-epochs 2", "serve"]
    (tmp_path / "calls").unlink()
    done = run_entrypoint("consumer", tmp_path, GDREC_CONSUMER_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["pull", "distill --no-progress", "serve"]
    (tmp_path / "calls").unlink()
    done = run_entrypoint("consumer", tmp_path, "status")
    assert done.returncode == 0 and (tmp_path / "calls").read_text() == "status\n"


@pytest.mark.parametrize("name", ["owner", "consumer"])
def test_the_entrypoints_never_trace_or_print_a_value(name):
    text = (REPO / "deploy" / f"{name}-entrypoint.sh").read_text()
    assert not re.search(r"^\s*set\s+-\w*x", text, re.M), "set -x would print the secrets"
    for line in re.findall(r"^\s*(?:echo|printf)\b.*$", text, re.M):
        expanded = re.findall(r"\$\{?(\w+)", line)
        assert set(expanded) <= {"name", "file"}, f"{name}-entrypoint.sh prints {expanded}: {line.strip()}"


@pytest.mark.parametrize("name", ["owner", "consumer"])
def test_dockerfiles_are_slim_non_root_cpu_by_default(name):
    text = (REPO / "deploy" / f"Dockerfile.{name}").read_text()
    assert re.search(r"^ARG BASE=python:3\.1\d-slim$", text, re.M)
    assert "download.pytorch.org/whl/cpu" in text and "cu1" in text  # CPU default, CUDA variant documented
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    assert (REPO / "deploy" / entrypoint.rsplit("/", 1)[-1]).is_file()


@pytest.mark.parametrize(("name", "foreign"), [("owner", ("model_consumer", "experiments", "demo")),
                                              ("consumer", ("data_owner", "experiments", "demo"))])
def test_each_image_holds_only_its_own_code(name, foreign):
    text = (REPO / "deploy" / f"Dockerfile.{name}").read_text()
    copied = [source for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M) for source in line.split()[:-1]]
    assert {"shared", f"{'data_owner' if name == 'owner' else 'model_consumer'}"} <= set(copied)
    assert not [c for c in copied if c.rstrip("/").split("/")[0] in {*foreign, "data", "artifacts", "tests", "."}
                or c.startswith(("deploy/secrets", "wheelhouse/"))]


@pytest.mark.parametrize("name", ["owner", "consumer"])
def test_images_install_the_hash_pinned_lock_into_a_venv_in_a_build_stage(name):
    text = (REPO / "deploy" / f"Dockerfile.{name}").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert stages == [("${BASE}", "build"), ("${BASE}", "")], stages  # the wheels and sources stay in the build stage
    assert re.search(r"^ARG LOCK=requirements\.lock$", text, re.M) and "COPY ${LOCK} wheelhouse* " in text
    assert "pip install --require-hashes --only-binary=:all:" in text and "--no-index --find-links" in text
    assert "python3 -m venv /opt/venv" in text and "COPY --from=build /opt/venv /opt/venv" in text
    assert "--chmod" not in text  # the legacy builder (docker-compose 1.29 without BuildKit) refuses it
    lock = (REPO / "requirements.lock").read_text()
    pins = re.findall(r"^([\w.-]+)==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}", lock, re.M)
    assert {"torch", "fastapi", "setuptools"} <= {p for p, _ in pins}
    assert dict(pins)["torch"].endswith("+cpu")


def test_the_build_context_leaves_out_secrets_data_and_environments():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"deploy/secrets/", "data/", "artifacts/", ".venv*", "**/.env", ".git"} <= set(ignored)
    assert git_ignored(REPO / "wheelhouse" / "torch.whl")


# ------------------------------------------------------------------------------------------ boundary, statically


def test_the_compose_file_passes_the_boundary_rules_a_compose_file_can_answer(compose):
    report = audit(Deployment.from_compose(compose), STATIC_RULES)
    assert report.passed, report.to_markdown()


def test_the_misconfigured_override_breaks_the_boundary_rules_it_is_meant_to(compose):
    override = yaml.safe_load((REPO / "deploy" / "compose.misconfigured.yml").read_text())
    report = audit(Deployment.from_compose(merge_compose(compose, override)), STATIC_RULES)
    assert report.violated == ["raw-data-owner-only", "no-shared-volume", "consumer-networks"]


@pytest.mark.parametrize("change", ["raw-writable", "shared-volume", "export-not-internal", "root", "secret-env"])
def test_a_changed_compose_file_fails_the_static_audit(compose, change):
    broken = merge_compose(compose, {})
    owner, consumer = broken["services"]["owner"], broken["services"]["consumer"]
    if change == "raw-writable":
        owner["volumes"][0]["read_only"] = False
    elif change == "shared-volume":
        consumer["volumes"].append("owner-artifacts:/owner-artifacts:ro")
    elif change == "export-not-internal":
        broken["networks"]["export"] = {}
    elif change == "root":
        consumer["user"] = "0"
    else:
        consumer["environment"]["GDREC_CONSUMER_ADMIN_KEY"] = "x" * 64
    rule = {"raw-writable": "raw-data-owner-only", "shared-volume": "no-shared-volume",
            "export-not-internal": "consumer-networks", "root": "non-root", "secret-env": "secrets-as-files"}[change]
    assert audit(Deployment.from_compose(broken), STATIC_RULES).violated == [rule]


def test_the_gpu_override_reserves_a_device_for_the_owner_only():
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"owner"}
    devices = gpu["services"]["owner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"


def test_the_smoke_script_tears_down_and_checks_the_misconfigured_override():
    text = (REPO / "deploy" / "compose_smoke.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert "down -v" in text and "trap cleanup EXIT" in text
    assert "-f deploy/compose.misconfigured.yml" in text and "audit boundary" in text
    assert not re.search(r"^\s*set\s+-\w*x", text, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^compose-smoke:\n\tdeploy/compose_smoke\.sh$", makefile, re.M)
    assert re.search(r"^lock:", makefile, re.M) and re.search(r"^wheelhouse:", makefile, re.M)


def test_the_owner_image_caches_compiled_training_code_where_its_user_may_write():
    text = (REPO / "deploy" / "Dockerfile.owner").read_text()
    env_lines = " ".join(re.findall(r"^ENV (.*)$", text.replace("\\\n", " "), re.M))
    cache = re.search(r"\bNUMBA_CACHE_DIR=(\S+)", env_lines)
    artifacts = re.search(r"\bGDREC_OWNER_ARTIFACTS_DIR=(\S+)", env_lines)
    assert cache and artifacts and cache.group(1).startswith(artifacts.group(1) + "/")  # the venv is root's
    assert f"chown gdrec {artifacts.group(1)}" in text
