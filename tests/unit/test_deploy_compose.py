"""Static checks of docker-compose.yml and the Dockerfiles (no Docker engine runs here): the raw-data volume is
mounted read-only into the owner and reaches no other service, the consumer has only its own volume, the only
network it shares with the owner is internal, both have health checks, secrets come from uncommitted env files
with committed examples, and the images run as a non-root user on a slim Python base."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


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


def test_health_checks_and_secrets_from_uncommitted_env_files(compose):
    for name, port in (("owner", 8100), ("consumer", 8200)):
        service = compose["services"][name]
        assert f"127.0.0.1:{port}/ready" in " ".join(service["healthcheck"]["test"])
        env_file = REPO / service["env_file"]
        example = env_file.with_name(env_file.name + ".example")
        assert example.is_file(), example
        ignored = subprocess.run(["git", "check-ignore", "-q", str(env_file)], cwd=REPO).returncode == 0
        assert ignored, f"{env_file} would be committed: it must be git-ignored"
        assert not re.search(r"(SECRET|KEY)=\S", example.read_text()), f"{example} holds a value for a secret"
        assert not [value for key, value in service.get("environment", {}).items() if re.search("SECRET|KEY", key)]


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


def test_the_consumer_image_holds_no_owner_code():
    text = (REPO / "deploy" / "Dockerfile.consumer").read_text()
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.M)
    assert not [c for c in copied if c.startswith(("data_owner", "experiments", "data", "artifacts"))]
