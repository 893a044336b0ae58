"""The boundary audit's rules (data_owner.boundary) on hand-made `docker inspect` data, without an engine: each rule
passes on a deployment laid out as docker-compose.yml lays it out and fails, naming what is wrong, when one thing is
changed; no report ever shows a secret value. The `audit boundary` command's errors without an engine or SDK."""

from __future__ import annotations

import copy
import json
import secrets
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from data_owner import boundary
from data_owner.boundary import Deployment, audit

PROJECT = "smoke"
RAW = "/srv/raw-data"
SECRET_DIR = "/srv/secrets"


def container(service: str, uid: str, env: list[str], mounts: list[dict], networks: list[str]) -> dict[str, Any]:
    return {"Id": f"id-{service}", "Name": f"/{PROJECT}_{service}_1", "Image": f"sha256:{service}",
            "State": {"Status": "running"},
            "Config": {"User": uid, "Env": env, "Labels": {boundary.COMPOSE_PROJECT: PROJECT,
                                                           boundary.COMPOSE_SERVICE: service}},
            "HostConfig": {"NetworkMode": f"{PROJECT}_export"},
            "Mounts": mounts,
            "NetworkSettings": {"Networks": {n: {"NetworkID": f"net-{n}"} for n in networks}}}


def bind(source: str, destination: str, rw: bool = False) -> dict[str, Any]:
    return {"Type": "bind", "Source": source, "Destination": destination, "RW": rw}


def volume(name: str, destination: str) -> dict[str, Any]:
    return {"Type": "volume", "Name": name, "Source": f"/var/lib/docker/volumes/{name}/_data",
            "Destination": destination, "RW": True}


def secret(name: str, file: str | None = None) -> dict[str, Any]:
    return bind(f"{SECRET_DIR}/{file or name}", f"/run/secrets/{name}")


@pytest.fixture
def inspect() -> dict[str, Any]:
    """A deployment as docker-compose.yml makes it: what `Deployment.from_inspect` takes, as keyword arguments."""
    owner = container("owner", "10001", ["PATH=/opt/venv/bin:/usr/bin", "GDREC_OWNER_DATA_DIR=/data",
                                         "GDREC_OWNER_ENVIRONMENT=production"],
                      [bind(RAW, "/data"), volume(f"{PROJECT}_owner-artifacts", "/artifacts"),
                       secret("gdrec_owner_secret"), secret("gdrec_owner_consumer_key", "gdrec_consumer_api_key")],
                      [f"{PROJECT}_export", f"{PROJECT}_owner-edge"])
    consumer = container("consumer", "10002", ["GDREC_CONSUMER_DATA_DIR=/consumer-data"],
                         [volume(f"{PROJECT}_consumer-data", "/consumer-data"), secret("gdrec_consumer_owner_key"),
                          secret("gdrec_consumer_api_key"), secret("gdrec_consumer_admin_key")],
                         [f"{PROJECT}_export", f"{PROJECT}_consumer-edge"])
    networks = [{"Name": f"{PROJECT}_export", "Internal": True,
                 "Containers": {"id-owner": {"Name": "o"}, "id-consumer": {"Name": "c"}}},
                {"Name": f"{PROJECT}_owner-edge", "Internal": False, "Containers": {"id-owner": {"Name": "o"}}},
                {"Name": f"{PROJECT}_consumer-edge", "Internal": False, "Containers": {"id-consumer": {"Name": "c"}}}]
    images = {f"sha256:{s}": {"Config": {"Env": [f"GDREC_{s.upper()}_ENVIRONMENT=production"], "Labels": None}}
              for s in ("owner", "consumer")}
    histories = {f"sha256:{s}": [{"CreatedBy": "/bin/sh -c #(nop) USER 10001", "Comment": ""},
                                 {"CreatedBy": "/bin/sh -c pip install -r requirements.lock", "Comment": ""}]
                 for s in ("owner", "consumer")}
    probes = {"owner": {"uid": 10001, "visible_paths": {}},
              "consumer": {"uid": 10002, "visible_paths": {"/data": False, RAW: False}}}
    values = {f"/run/secrets/{n}": secrets.token_hex(32) for n in
              ("gdrec_owner_secret", "gdrec_consumer_owner_key", "gdrec_consumer_api_key", "gdrec_consumer_admin_key")}
    values["/run/secrets/gdrec_owner_consumer_key"] = values["/run/secrets/gdrec_consumer_api_key"]
    return {"project": PROJECT, "containers": [owner, consumer], "networks": networks, "images": images,
            "histories": histories, "probes": probes, "secret_values": values}


def results(data: dict[str, Any]) -> dict[str, list[str]]:
    report = audit(Deployment.from_inspect(**data))
    return {r.rule: list(r.violations) for r in report.results}


def failed(data: dict[str, Any]) -> dict[str, list[str]]:
    return {rule: v for rule, v in results(data).items() if v}


def service(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in data["containers"] if c["Config"]["Labels"][boundary.COMPOSE_SERVICE] == name)


def test_the_deployment_of_docker_compose_yml_passes_every_rule(inspect):
    report = audit(Deployment.from_inspect(**inspect))
    assert report.passed and report.violated == [], report.to_markdown()
    assert [r.rule for r in report.results] == list(boundary.RULES)


def test_raw_data_writable_or_in_the_consumer_is_flagged(inspect):
    data = copy.deepcopy(inspect)
    service(data, "owner")["Mounts"][0]["RW"] = True
    assert list(failed(data)) == ["raw-data-owner-only"]
    assert "writable" in failed(data)["raw-data-owner-only"][0]
    data = copy.deepcopy(inspect)
    service(data, "consumer")["Mounts"].append(bind(f"{RAW}/ml-100k", "/mnt/movies"))  # a folder inside the raw data
    assert set(failed(data)) == {"raw-data-owner-only", "no-shared-volume"}
    assert failed(data)["raw-data-owner-only"] == [f"consumer: the raw data reaches it (bind {RAW}/ml-100k -> "
                                                   "/mnt/movies (ro))"]
    data = copy.deepcopy(inspect)
    service(data, "owner")["Mounts"].pop(0)
    assert failed(data)["raw-data-owner-only"] == ["owner: nothing is mounted at its raw-data path /data"]


def test_the_raw_data_path_follows_the_owner_setting(inspect):
    data = copy.deepcopy(inspect)
    owner = service(data, "owner")
    owner["Config"]["Env"][1] = "GDREC_OWNER_DATA_DIR=/raw"
    owner["Mounts"][0]["Destination"] = "/raw"
    assert not failed(data)
    owner["Mounts"][0]["Destination"] = "/data"
    assert failed(data)["raw-data-owner-only"] == ["owner: nothing is mounted at its raw-data path /raw"]


def test_a_volume_shared_by_owner_and_consumer_is_flagged_but_not_a_read_only_secret_file(inspect):
    data = copy.deepcopy(inspect)
    service(data, "consumer")["Mounts"].append(volume(f"{PROJECT}_owner-artifacts", "/owner-artifacts"))
    assert failed(data) == {"no-shared-volume": [
        f"owner and consumer share volume {PROJECT}_owner-artifacts (owner: /artifacts, consumer: /owner-artifacts)"]}
    data = copy.deepcopy(inspect)
    service(data, "consumer")["Mounts"][2]["RW"] = True  # the API key file both get, writable in the consumer
    assert set(failed(data)) == {"no-shared-volume", "secrets-as-files"}


def test_the_consumer_on_the_owner_edge_or_a_non_internal_export_network_is_flagged(inspect):
    data = copy.deepcopy(inspect)
    service(data, "consumer")["NetworkSettings"]["Networks"][f"{PROJECT}_owner-edge"] = {"NetworkID": "x"}
    data["networks"][1]["Containers"]["id-consumer"] = {"Name": "c"}
    assert failed(data) == {"consumer-networks": [
        f"consumer: shares 2 networks with owner ({PROJECT}_export, {PROJECT}_owner-edge): exactly one, the internal "
        "export network, is allowed", f"consumer: network {PROJECT}_owner-edge, shared with owner, is not internal"]}
    data = copy.deepcopy(inspect)
    data["networks"][0]["Internal"] = False
    assert failed(data) == {"consumer-networks": [f"consumer: network {PROJECT}_export, shared with owner, is not "
                                                  "internal"]}
    data = copy.deepcopy(inspect)
    data["networks"][2]["Containers"]["id-other"] = {"Name": "somebody-else"}
    assert failed(data) == {"consumer-networks": [f"consumer: network {PROJECT}_consumer-edge also reaches "
                                                  "somebody-else"]}
    data = copy.deepcopy(inspect)
    service(data, "consumer")["NetworkSettings"]["Networks"]["bridge"] = {"NetworkID": "b"}
    data["networks"].append({"Name": "bridge", "Internal": False, "Containers": {"id-consumer": {}}})
    assert "only its own edge network is allowed" in failed(data)["consumer-networks"][0]


def test_the_raw_data_path_seen_from_inside_the_consumer_or_not_probed_is_flagged(inspect):
    data = copy.deepcopy(inspect)
    data["probes"]["consumer"]["visible_paths"]["/data"] = True
    assert failed(data) == {"consumer-cannot-see-raw-data": ["consumer: /data exists inside the container"]}
    data["probes"]["consumer"] = {"uid": None, "visible_paths": None}  # not running: fail closed
    assert "could not look inside" in failed(data)["consumer-cannot-see-raw-data"][0]
    assert "could not read its user id" in failed(data)["non-root"][0]


def test_root_users_are_flagged(inspect):
    data = copy.deepcopy(inspect)
    service(data, "owner")["Config"]["User"] = ""
    assert failed(data) == {"non-root": ["owner: runs as the default user (root)"]}
    data = copy.deepcopy(inspect)
    service(data, "consumer")["Config"]["User"] = "root:root"
    data["probes"]["consumer"]["uid"] = 0
    assert failed(data) == {"non-root": ["consumer: runs as root:root", "consumer: its processes run as uid 0"]}


@pytest.mark.parametrize("place", ["image-env", "history", "label", "container-env"])
def test_a_secret_value_in_an_image_or_the_environment_is_flagged_without_showing_it(inspect, place):
    data = copy.deepcopy(inspect)
    value = data["secret_values"]["/run/secrets/gdrec_owner_secret"]
    image = data["images"]["sha256:owner"]
    if place == "image-env":
        image["Config"]["Env"].append(f"SOME_SETTING={value}")
    elif place == "history":
        data["histories"]["sha256:owner"].append({"CreatedBy": f"/bin/sh -c echo {value} > /x", "Comment": ""})
    elif place == "label":
        image["Config"]["Labels"] = {"build-note": value}
    else:
        service(data, "owner")["Config"]["Env"].append(f"UNRELATED={value}")
    where = {"image-env": "the image's environment", "history": "the image's build history",
             "label": "the image's labels", "container-env": "the container's environment"}[place]
    assert failed(data) == {"no-secret-in-images": [
        f"owner: the secret mounted at /run/secrets/gdrec_owner_secret appears in {where}"]}
    report = audit(Deployment.from_inspect(**data))
    assert value not in report.to_json() + report.to_markdown() + repr(Deployment.from_inspect(**data))


def test_unreadable_or_absent_secret_files_fail_closed(inspect):
    data = copy.deepcopy(inspect)
    data["secret_values"] = {}
    assert failed(data) == {"no-secret-in-images": [
        "no secret value to look for: no readable secret file is mounted under /run/secrets"]}
    data["unreadable_secrets"] = [f"{SECRET_DIR}/gdrec_owner_secret"]
    assert failed(data)["no-secret-in-images"] == [
        f"could not read the secret file {SECRET_DIR}/gdrec_owner_secret to compare: run the audit on the engine's "
        "host"]


def test_secrets_as_environment_variables_or_missing_files_are_flagged(inspect):
    data = copy.deepcopy(inspect)
    service(data, "consumer")["Config"]["Env"].append("GDREC_CONSUMER_API_KEY=not-a-file")
    service(data, "consumer")["Config"]["Env"].append("GDREC_CONSUMER_API_KEY_FILE=/run/secrets/x")  # a path: fine
    assert failed(data) == {"secrets-as-files": [
        "consumer: the environment variable GDREC_CONSUMER_API_KEY holds a secret"]}
    data = copy.deepcopy(inspect)
    service(data, "owner")["Mounts"].pop(2)
    assert failed(data) == {"secrets-as-files": [
        "owner: its secret gdrec_owner_secret is not a file at /run/secrets/gdrec_owner_secret"]}


def test_a_missing_service_is_a_violation_not_a_crash(inspect):
    data = copy.deepcopy(inspect)
    data["containers"] = [service(data, "owner")]
    violated = failed(data)
    assert set(violated) == {"no-shared-volume", "consumer-networks", "consumer-cannot-see-raw-data", "non-root",
                             "secrets-as-files"}
    assert all(f"no consumer service in project {PROJECT}" in v for v in violated["consumer-networks"])


def test_the_report_names_each_violated_rule_in_markdown_and_json(inspect, tmp_path):
    data = copy.deepcopy(inspect)
    data["probes"]["consumer"]["visible_paths"]["/data"] = True
    data["networks"][0]["Internal"] = False
    report = audit(Deployment.from_inspect(**data))
    assert report.violated == ["consumer-networks", "consumer-cannot-see-raw-data"]
    markdown, data_file = report.write(tmp_path)
    parsed = json.loads(data_file.read_text())
    assert parsed["passed"] is False and parsed["violated"] == report.violated
    assert {r["rule"]: r["passed"] for r in parsed["rules"]}["non-root"] is True
    text = markdown.read_text()
    assert "FAIL: consumer-networks, consumer-cannot-see-raw-data" in text and "## consumer-cannot-see-raw-data" in text


# ------------------------------------------------------------------------------------------------ the command


def test_the_command_without_the_docker_sdk_says_what_to_install(monkeypatch):
    from data_owner.cli import app

    monkeypatch.setitem(sys.modules, "docker", None)  # import docker raises ImportError
    done = CliRunner().invoke(app, ["audit", "boundary"])
    assert done.exit_code == 2 and "pip install 'gdrec[audit]'" in done.output


def test_the_command_without_an_engine_exits_2_with_a_clear_message(monkeypatch, tmp_path):
    pytest.importorskip("docker")
    from data_owner.cli import app

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    done = CliRunner().invoke(app, ["audit", "boundary", "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and "cannot reach the Docker engine" in done.output, done.output
    assert not (tmp_path / "out").exists()
