"""The data boundary of a GD-REC container deployment, audited: the raw data reaches the owner only, read-only; the
consumer shares no volume with the owner and meets it only on an internal network; the consumer cannot see the raw
data path; both run as non-root; secrets reach the containers as files, and no secret value is in an image.

`Deployment` is what the rules look at: built from the Docker engine's inspect data of a live compose project
(`Deployment.from_inspect`, fed by `inspect_live` through the Docker SDK) or from a compose file alone
(`Deployment.from_compose`, for the rules the YAML can answer). Each rule is a plain function from a `Deployment` to
the list of its violations, so the rules are tested on hand-made inspect data without an engine. `audit` runs them
and returns a `BoundaryReport` (markdown and JSON). No secret value ever appears in a violation or a report: the
values are compared, never shown."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECRETS_ROOT = "/run/secrets"
# the secrets each service must receive as files under /run/secrets
OWNER_SECRETS = ("gdrec_owner_secret",)
CONSUMER_SECRETS = ("gdrec_consumer_owner_key", "gdrec_consumer_api_key", "gdrec_consumer_admin_key")
DEFAULT_OWNER_DATA_DIR = "/data"
# an environment variable with such a name holds a secret unless it only names a file (…_FILE)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ADMIN_?KEY|OWNER_?KEY|CONSUMER_?KEY|PRIVATE_?KEY",
                         re.I)
MIN_SECRET_LENGTH = 8  # shorter file contents are not searched for (they would match by chance)
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(frozen=True)
class Mount:
    """One mount of a container: `source` is the host path of a bind, the name of a volume."""

    type: str
    source: str
    destination: str
    read_only: bool

    @property
    def is_secret_file(self) -> bool:
        return self.type == "bind" and posixpath.dirname(self.destination.rstrip("/")) == SECRETS_ROOT

    def describe(self) -> str:
        return f"{self.type} {self.source} -> {self.destination} ({'ro' if self.read_only else 'rw'})"


@dataclass(frozen=True)
class Service:
    """One service's container as the rules see it. `uid` and `visible_paths` come from commands run inside the
    container (None: not probed, e.g. a static audit, or the probe failed). What may hold a leaked secret (the
    environments, labels, build history) stays out of the repr."""

    name: str
    container: str = ""
    user: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    mounts: tuple[Mount, ...] = ()
    networks: tuple[str, ...] = ()
    network_mode: str = ""
    image: str = ""
    image_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    image_history: tuple[str, ...] = field(default=(), repr=False)
    image_labels: Mapping[str, str] = field(default_factory=dict, repr=False)
    uid: int | None = None
    visible_paths: Mapping[str, bool] | None = None

    def mount_at(self, destination: str) -> Mount | None:
        wanted = destination.rstrip("/") or "/"
        return next((m for m in self.mounts if (m.destination.rstrip("/") or "/") == wanted), None)


@dataclass(frozen=True)
class Network:
    name: str
    internal: bool
    services: tuple[str, ...] = ()  # every container attached, by service name (or container name if none)


@dataclass(frozen=True)
class Deployment:
    """The owner, the consumer, the project's other services, its networks, and the secret values to look for
    (never reported). `live` says whether it was inspected on an engine (else it comes from a compose file)."""

    project: str
    services: Mapping[str, Service]
    networks: Mapping[str, Network]
    owner: str = "owner"
    consumer: str = "consumer"
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False)  # mount destination -> value
    unreadable_secrets: tuple[str, ...] = ()
    live: bool = True

    def service(self, name: str) -> Service | None:
        return self.services.get(name)

    @property
    def owner_data_dir(self) -> str:
        owner = self.service(self.owner)
        return (owner.env.get("GDREC_OWNER_DATA_DIR") if owner else None) or DEFAULT_OWNER_DATA_DIR

    def raw_mount(self) -> Mount | None:
        owner = self.service(self.owner)
        return owner.mount_at(self.owner_data_dir) if owner else None

    # ---------------------------------------------------------------------------------------------- from inspect

    @classmethod
    def from_inspect(
        cls,
        project: str,
        containers: Sequence[Mapping[str, Any]],
        networks: Sequence[Mapping[str, Any]],
        images: Mapping[str, Mapping[str, Any]] | None = None,
        histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        probes: Mapping[str, Mapping[str, Any]] | None = None,
        secret_values: Mapping[str, str] | None = None,
        unreadable_secrets: Iterable[str] = (),
        owner: str = "owner",
        consumer: str = "consumer",
    ) -> Deployment:
        """From `docker inspect` of the project's containers and networks (the engine's JSON), the images' inspect
        data and history by image id, and the probes by service name (`{"uid": int | None, "visible_paths": {path:
        bool}}`)."""
        images, histories, probes = images or {}, histories or {}, probes or {}
        by_id: dict[str, str] = {}
        services: dict[str, Service] = {}
        for attrs in containers:
            config = attrs.get("Config") or {}
            labels = config.get("Labels") or {}
            name = labels.get(COMPOSE_SERVICE) or str(attrs.get("Name", "")).lstrip("/")
            by_id[str(attrs.get("Id", ""))] = name
            image_id = str(attrs.get("Image", ""))
            image = images.get(image_id) or {}
            image_config = image.get("Config") or {}
            probe = probes.get(name) or {}
            settings = attrs.get("NetworkSettings") or {}
            services[name] = Service(
                name=name,
                container=str(attrs.get("Name", "")).lstrip("/"),
                user=str(config.get("User") or ""),
                env=_env(config.get("Env")),
                mounts=tuple(Mount(type=str(m.get("Type", "")), source=str(m.get("Name") or m.get("Source") or ""),
                                   destination=str(m.get("Destination", "")), read_only=not m.get("RW", True))
                             for m in attrs.get("Mounts") or []),
                networks=tuple(sorted((settings.get("Networks") or {}).keys())),
                network_mode=str((attrs.get("HostConfig") or {}).get("NetworkMode") or ""),
                image=image_id,
                image_env=_env(image_config.get("Env")),
                image_history=tuple(" ".join(str(step.get(k) or "") for k in ("CreatedBy", "Comment")).strip()
                                    for step in histories.get(image_id, [])),
                image_labels=dict(image_config.get("Labels") or {}),
                uid=probe.get("uid"),
                visible_paths=probe.get("visible_paths"),
            )
        nets = {}
        for attrs in networks:
            attached = tuple(sorted(by_id.get(cid, str(info.get("Name", cid)))
                                    for cid, info in (attrs.get("Containers") or {}).items()))
            nets[str(attrs["Name"])] = Network(name=str(attrs["Name"]), internal=bool(attrs.get("Internal")),
                                               services=attached)
        return cls(project=project, services=services, networks=nets, owner=owner, consumer=consumer,
                   secret_values=dict(secret_values or {}), unreadable_secrets=tuple(unreadable_secrets))

    # ---------------------------------------------------------------------------------------------- from compose

    @classmethod
    def from_compose(cls, compose: Mapping[str, Any], project: str = "compose", owner: str = "owner",
                     consumer: str = "consumer") -> Deployment:
        """From a parsed compose file (after `merge_compose` of any overrides): mounts, secrets, networks and the
        environment as written. Bind sources stay as written (`${GDREC_DATA_DIR:-./data}`): equal text, equal
        source. What only a live engine knows (users, probes, images) is left empty."""
        declared_secrets = compose.get("secrets") or {}
        declared_networks = compose.get("networks") or {}
        services: dict[str, Service] = {}
        for name, spec in (compose.get("services") or {}).items():
            mounts = [_compose_mount(volume) for volume in spec.get("volumes") or []]
            for secret in spec.get("secrets") or []:
                if isinstance(secret, str):
                    source = target = secret
                else:
                    source, target = secret["source"], secret.get("target", secret["source"])
                target = target if target.startswith("/") else f"{SECRETS_ROOT}/{target}"
                file = (declared_secrets.get(source) or {}).get("file", f"<undeclared secret {source}>")
                mounts.append(Mount(type="bind", source=str(file), destination=target, read_only=True))
            networks = spec.get("networks")
            names = tuple(sorted(networks if networks is not None else ["default"]))
            services[name] = Service(name=name, env=_env(spec.get("environment")), mounts=tuple(mounts),
                                     networks=names, network_mode=str(spec.get("network_mode") or ""),
                                     user=str(spec.get("user") or ""))
        nets = {}
        for name in {n for s in services.values() for n in s.networks}:
            nets[name] = Network(name=name, internal=bool((declared_networks.get(name) or {}).get("internal")),
                                 services=tuple(sorted(s.name for s in services.values() if name in s.networks)))
        return cls(project=project, services=services, networks=nets, owner=owner, consumer=consumer, live=False)


def _env(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in map(str, value))


def _compose_mount(volume: Any) -> Mount:
    if isinstance(volume, str):  # short syntax source:target[:mode]
        parts = volume.split(":")
        if len(parts) == 1:
            return Mount(type="volume", source="", destination=parts[0], read_only=False)
        kind = "volume" if re.fullmatch(r"[\w.-]+", parts[0]) else "bind"
        return Mount(type=kind, source=parts[0], destination=parts[1], read_only="ro" in parts[2:3][0].split(",")
                     if len(parts) > 2 else False)
    return Mount(type=str(volume.get("type", "volume")), source=str(volume.get("source", "")),
                 destination=str(volume.get("target", "")), read_only=bool(volume.get("read_only", False)))


def merge_compose(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Compose's merge of override files, for what the rules read: per service, `volumes`, `secrets`, `ports` and
    list `networks` add up (a mount on the same target replaces), mappings merge, scalars are replaced."""
    merged: dict[str, Any] = json.loads(json.dumps(base))
    for override in overrides:
        for section, value in override.items():
            if section != "services":
                if isinstance(value, Mapping):
                    merged.setdefault(section, {}).update(json.loads(json.dumps(value)))
                else:
                    merged[section] = value
                continue
            services = merged.setdefault("services", {})
            for name, spec in value.items():
                target = services.setdefault(name, {})
                for key, item in spec.items():
                    current = target.get(key)
                    if key == "volumes" and isinstance(current, list):
                        added = {_compose_mount(v).destination for v in item}
                        target[key] = [v for v in current if _compose_mount(v).destination not in added] + list(item)
                    elif isinstance(current, list) and isinstance(item, list):
                        target[key] = current + [i for i in item if i not in current]
                    elif isinstance(current, Mapping) and isinstance(item, Mapping):
                        target[key] = {**current, **item}
                    else:
                        target[key] = item
    return merged


# -------------------------------------------------------------------------------------------------------- rules


def _inside(path: str, folder: str) -> bool:
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _same_source(a: Mount, b: Mount) -> bool:
    if a.type == "bind" and b.type == "bind":
        return _inside(a.source, b.source) or _inside(b.source, a.source)
    return a.type == b.type and a.source == b.source and bool(a.source)


def _required(deployment: Deployment, *names: str) -> tuple[list[Service], list[str]]:
    found = [deployment.service(n) for n in names]
    missing = [f"no {n} service in project {deployment.project}"
               for n, s in zip(names, found, strict=True) if s is None]
    return [s for s in found if s is not None], missing


def rule_raw_data_owner_only(deployment: Deployment) -> list[str]:
    """The raw-data source is mounted into the owner only, read-only."""
    found, missing = _required(deployment, deployment.owner)
    if missing:
        return missing
    owner = found[0]
    raw = deployment.raw_mount()
    if raw is None:
        return [f"{owner.name}: nothing is mounted at its raw-data path {deployment.owner_data_dir}"]
    violations = []
    if not raw.read_only:
        violations.append(f"{owner.name}: the raw data ({raw.describe()}) is writable: mount it read-only")
    for service in deployment.services.values():
        if service.name == owner.name:
            continue
        for mount in service.mounts:
            if _same_source(mount, raw) or mount.destination.rstrip("/") == deployment.owner_data_dir.rstrip("/"):
                violations.append(f"{service.name}: the raw data reaches it ({mount.describe()})")
    return violations


def rule_no_shared_volume(deployment: Deployment) -> list[str]:
    """No volume or bind source is shared between the owner and the consumer (read-only secret files aside)."""
    found, missing = _required(deployment, deployment.owner, deployment.consumer)
    if missing:
        return missing
    owner, consumer = found
    violations = []
    for a in owner.mounts:
        for b in consumer.mounts:
            if not _same_source(a, b):
                continue
            if a.is_secret_file and b.is_secret_file and a.read_only and b.read_only:
                continue  # one secret file given to both (the consumer's API key, which the owner's evaluate sends)
            violations.append(f"{owner.name} and {consumer.name} share {a.type} {a.source} "
                              f"({owner.name}: {a.destination}, {consumer.name}: {b.destination})")
    return violations


def rule_consumer_networks(deployment: Deployment) -> list[str]:
    """The consumer is attached only to one internal network it shares with the owner (the export network) and to
    networks of its own (its edge network)."""
    found, missing = _required(deployment, deployment.owner, deployment.consumer)
    if missing:
        return missing
    owner, consumer = found
    violations = []
    if consumer.network_mode in ("host",) or "host" in consumer.networks:
        violations.append(f"{consumer.name}: uses the host's network")
    shared = sorted(set(consumer.networks) & set(owner.networks))
    if len(shared) != 1:
        violations.append(f"{consumer.name}: shares {len(shared)} networks with {owner.name} "
                          f"({', '.join(shared) or '-'}): exactly one, the internal export network, is allowed")
    for name in shared:
        network = deployment.networks.get(name)
        if network is None or not network.internal:
            violations.append(f"{consumer.name}: network {name}, shared with {owner.name}, is not internal")
    own = [n for n in consumer.networks if n not in shared]
    if len(own) > 1:
        violations.append(f"{consumer.name}: attached to {len(own)} networks besides the export network "
                          f"({', '.join(own)}): only its own edge network is allowed")
    for name in own:
        network = deployment.networks.get(name)
        others = [s for s in (network.services if network else ()) if s != consumer.name]
        if others:
            violations.append(f"{consumer.name}: network {name} also reaches {', '.join(others)}")
    return violations


def rule_consumer_cannot_see_raw_data(deployment: Deployment) -> list[str]:
    """From inside the consumer, the owner's raw-data path (and the host path of its source) does not exist."""
    found, missing = _required(deployment, deployment.consumer)
    if missing:
        return missing
    consumer = found[0]
    if not deployment.live:
        return []  # nothing runs: the mounts are checked by the raw-data rule
    if consumer.visible_paths is None:
        return [f"{consumer.name}: could not look inside the container (is it running?)"]
    return [f"{consumer.name}: {path} exists inside the container" for path, seen in consumer.visible_paths.items()
            if seen]


def _root_user(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def rule_non_root(deployment: Deployment) -> list[str]:
    """The owner and the consumer run as a non-root user (the image's or compose's `user`, and `id -u` inside)."""
    found, missing = _required(deployment, deployment.owner, deployment.consumer)
    violations = list(missing)
    for service in found:
        if not deployment.live and not service.user:
            continue  # the compose file leaves the user to the image
        if _root_user(service.user):
            violations.append(f"{service.name}: runs as {service.user or 'the default user (root)'}")
        if deployment.live and service.uid is None:
            violations.append(f"{service.name}: could not read its user id inside the container (is it running?)")
        elif service.uid == 0:
            violations.append(f"{service.name}: its processes run as uid 0")
    return violations


def rule_no_secret_in_images(deployment: Deployment) -> list[str]:
    """No secret value appears in an image's environment, labels or build history, nor in a container's
    environment, command or entrypoint."""
    if not deployment.live:
        return []
    violations = [f"could not read the secret file {path} to compare: run the audit on the engine's host"
                  for path in deployment.unreadable_secrets]
    values = {where: value for where, value in deployment.secret_values.items() if len(value) >= MIN_SECRET_LENGTH}
    if not values and not violations:
        violations.append("no secret value to look for: no readable secret file is mounted under /run/secrets")
    for service in deployment.services.values():
        places = {"the image's environment": [f"{k}={v}" for k, v in service.image_env.items()],
                  "the image's labels": [f"{k}={v}" for k, v in service.image_labels.items()],
                  "the image's build history": list(service.image_history),
                  "the container's environment": [f"{k}={v}" for k, v in service.env.items()]}
        for place, texts in places.items():
            for where, value in values.items():
                if any(value in text for text in texts):
                    violations.append(f"{service.name}: the secret mounted at {where} appears in {place}")
    return violations


def rule_secrets_as_files(deployment: Deployment) -> list[str]:
    """Each service's secrets are read-only files under /run/secrets, none is an environment variable."""
    violations = []
    for name, required in ((deployment.owner, OWNER_SECRETS), (deployment.consumer, CONSUMER_SECRETS)):
        service = deployment.service(name)
        if service is None:
            violations.append(f"no {name} service in project {deployment.project}")
            continue
        for secret in required:
            mount = service.mount_at(f"{SECRETS_ROOT}/{secret}")
            if mount is None:
                violations.append(f"{name}: its secret {secret} is not a file at {SECRETS_ROOT}/{secret}")
            elif not mount.read_only:
                violations.append(f"{name}: its secret file {SECRETS_ROOT}/{secret} is writable")
    for service in deployment.services.values():
        for variable, value in {**service.image_env, **service.env}.items():
            if value and SECRET_NAME.search(variable) and not variable.endswith("_FILE"):
                violations.append(f"{service.name}: the environment variable {variable} holds a secret")
    return violations


Rule = Callable[[Deployment], list[str]]
RULES: dict[str, Rule] = {
    "raw-data-owner-only": rule_raw_data_owner_only,
    "no-shared-volume": rule_no_shared_volume,
    "consumer-networks": rule_consumer_networks,
    "consumer-cannot-see-raw-data": rule_consumer_cannot_see_raw_data,
    "non-root": rule_non_root,
    "no-secret-in-images": rule_no_secret_in_images,
    "secrets-as-files": rule_secrets_as_files,
}
# what a compose file alone answers (the others need a running deployment)
STATIC_RULES = ("raw-data-owner-only", "no-shared-volume", "consumer-networks", "non-root", "secrets-as-files")


# ------------------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RuleResult:
    rule: str
    description: str
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class BoundaryReport:
    project: str
    live: bool
    results: tuple[RuleResult, ...]
    services: Mapping[str, Any]
    checked_at: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def violated(self) -> list[str]:
        return [r.rule for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "live": self.live, "checked_at": self.checked_at, "passed": self.passed,
                "violated": self.violated,
                "rules": [{"rule": r.rule, "description": r.description, "passed": r.passed,
                           "violations": list(r.violations)} for r in self.results],
                "services": self.services}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        kind = "live deployment" if self.live else "compose file"
        lines = [f"# Data boundary audit: {self.project} ({kind})", "",
                 f"Checked at {self.checked_at}: {'PASS' if self.passed else 'FAIL: ' + ', '.join(self.violated)}",
                 "", "| rule | result | what it checks |", "|---|---|---|"]
        lines += [f"| {r.rule} | {'pass' if r.passed else 'FAIL'} | {r.description} |" for r in self.results]
        for r in self.results:
            if r.violations:
                lines += ["", f"## {r.rule}", ""] + [f"- {v}" for v in r.violations]
        lines += ["", "## Services", ""]
        for name, info in self.services.items():
            lines.append(f"- {name}: user {info['user'] or '-'}, uid {info['uid']}, networks "
                         f"{', '.join(info['networks']) or '-'}; mounts: {'; '.join(info['mounts']) or '-'}")
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        md, js = folder / "boundary.md", folder / "boundary.json"
        md.write_text(self.to_markdown())
        js.write_text(self.to_json())
        return md, js


def audit(deployment: Deployment, rules: Iterable[str] | None = None) -> BoundaryReport:
    """Run the rules (all, or the named ones) over a deployment."""
    names = list(rules) if rules is not None else list(RULES)
    results = tuple(RuleResult(rule=n, description=" ".join((RULES[n].__doc__ or "").split()),
                               violations=tuple(RULES[n](deployment))) for n in names)
    services = {s.name: {"container": s.container, "user": s.user, "uid": s.uid, "networks": list(s.networks),
                         "mounts": [m.describe() for m in s.mounts]} for s in deployment.services.values()}
    return BoundaryReport(project=deployment.project, live=deployment.live, results=results, services=services,
                          checked_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


# ---------------------------------------------------------------------------------------------- live, Docker SDK


class BoundaryAuditError(RuntimeError):
    """The deployment could not be inspected (no engine, no such project)."""


def compose_projects(client: Any, owner: str = "owner") -> list[str]:
    """The compose projects on the engine that run a service named `owner`."""
    containers = client.containers.list(all=True, filters={"label": f"{COMPOSE_SERVICE}={owner}"})
    return sorted({c.labels.get(COMPOSE_PROJECT, "") for c in containers} - {""})


def _probe(container: Any, paths: Sequence[str]) -> dict[str, Any]:
    """The uid the container's processes run as and which of `paths` exist inside it (None when it cannot run a
    command: not running, or no shell)."""
    if container.status != "running":
        return {"uid": None, "visible_paths": None}
    code, out = container.exec_run(["id", "-u"])
    uid = int(out.strip()) if code == 0 and out.strip().isdigit() else None
    script = 'for p; do if [ -e "$p" ]; then echo "1 $p"; else echo "0 $p"; fi; done'
    code, out = container.exec_run(["sh", "-c", script, "sh", *paths])
    visible = None
    if code == 0:
        visible = {}
        for line in out.decode(errors="replace").splitlines():
            flag, _, path = line.partition(" ")
            visible[path] = flag == "1"
    return {"uid": uid, "visible_paths": visible}


def _read_secret_files(containers: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], list[str]]:
    values, unreadable = {}, []
    for attrs in containers:
        for m in attrs.get("Mounts") or []:
            mount = Mount(type=str(m.get("Type", "")), source=str(m.get("Source", "")),
                          destination=str(m.get("Destination", "")), read_only=not m.get("RW", True))
            if not mount.is_secret_file or mount.destination in values:
                continue
            try:
                values[mount.destination] = Path(mount.source).read_text().strip()
            except OSError:
                unreadable.append(mount.source)
    return values, sorted(set(unreadable))


def inspect_live(client: Any, project: str | None = None, owner: str = "owner",
                 consumer: str = "consumer") -> Deployment:
    """Inspect a running compose project through a `docker.DockerClient`. Without `project`: the only project on
    the engine that runs an `owner` service."""
    if project is None:
        projects = compose_projects(client, owner)
        if len(projects) != 1:
            raise BoundaryAuditError(
                "no compose project runs an owner service on this engine" if not projects else
                f"several compose projects run an owner service ({', '.join(projects)}): name one with --project")
        project = projects[0]
    containers = client.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT}={project}"})
    if not containers:
        raise BoundaryAuditError(f"compose project {project} has no container on this engine")
    attrs = [c.attrs for c in containers]
    images, histories = {}, {}
    for c in containers:
        image_id = c.attrs["Image"]
        if image_id not in images:
            image = client.images.get(image_id)
            images[image_id], histories[image_id] = image.attrs, image.history()
    network_ids = {n["NetworkID"] for a in attrs for n in ((a.get("NetworkSettings") or {}).get("Networks") or {})
                   .values() if n.get("NetworkID")}
    networks = [client.networks.get(nid).attrs for nid in sorted(network_ids)]
    services = {(c.labels.get(COMPOSE_SERVICE) or c.name): c for c in containers}
    draft = Deployment.from_inspect(project, attrs, networks, owner=owner, consumer=consumer)
    paths = [draft.owner_data_dir]
    raw = draft.raw_mount()
    if raw is not None and raw.type == "bind" and raw.source not in paths:
        paths.append(raw.source)
    probes = {name: _probe(c, paths if name == consumer else []) for name, c in services.items()
              if name in (owner, consumer)}
    secret_values, unreadable = _read_secret_files(attrs)
    return Deployment.from_inspect(project, attrs, networks, images, histories, probes, secret_values, unreadable,
                                   owner=owner, consumer=consumer)
