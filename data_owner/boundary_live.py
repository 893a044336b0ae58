"""The data-boundary audit of a running Docker Compose deployment, through the Docker engine of this host (the
rules themselves are in `data_owner.boundary`)."""

from __future__ import annotations

from data_owner.boundary import BoundaryAuditError, BoundaryReport, audit, inspect_live


def audit_running_deployment(project: str | None = None, *, owner: str = "owner",
                             consumer: str = "consumer") -> BoundaryReport:
    """Inspect compose `project` (default: the only one running an `owner` service) on the engine that
    DOCKER_HOST (or the default socket) names, and run every boundary rule over it. Raises BoundaryAuditError
    without the Docker SDK, without a reachable engine, or when the deployment cannot be inspected."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise BoundaryAuditError("the boundary audit needs the Docker SDK: pip install 'gdrec[audit]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise BoundaryAuditError(f"cannot reach the Docker engine ({exc}): start it or set DOCKER_HOST") from None
    try:
        deployment = inspect_live(client, project, owner=owner, consumer=consumer)
    except DockerException as exc:
        raise BoundaryAuditError(str(exc)) from None
    finally:
        client.close()
    return audit(deployment)
