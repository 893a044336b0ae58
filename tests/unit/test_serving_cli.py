"""`gdrec-consumer serve --workers N`: the workers' settings come from the environment the command prepares, a
fixed metrics port is refused with several workers, the clean-up of interrupted publishes runs once in the command,
and the socket the workers share is a TCP socket, so that their connections get TCP_NODELAY (without it each small
response waited about 40 ms for a delayed ACK)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvicorn
from typer.testing import CliRunner
from uvicorn.supervisors import Multiprocess

from model_consumer.api.app import APP_FACTORY, create_app_from_environment
from model_consumer.cli import app
from model_consumer.cli.serve import WORKER_RELOAD_POLL_S, tcp_socket
from model_consumer.settings import ConsumerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("GDREC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GDREC_CONSUMER_ENVIRONMENT", "development")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def started(monkeypatch):
    """What `serve` started: ("run", kwargs) for one process, ("workers", config, socket) for several."""
    calls: list[tuple] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(("run", kwargs)))

    def run(self):
        calls.append(("workers", self.config, self.sockets[0]))
        self.sockets[0].close()

    monkeypatch.setattr(Multiprocess, "run", run)
    return calls


def test_workers_come_from_the_option_or_the_environment(monkeypatch):
    assert ConsumerSettings(_env_file=None).workers == 1
    monkeypatch.setenv("GDREC_CONSUMER_WORKERS", "3")
    assert ConsumerSettings(_env_file=None).workers == 3
    assert ConsumerSettings(_env_file=None, workers=2).workers == 2
    monkeypatch.setenv("GDREC_CONSUMER_WORKERS", "0")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "workers (GDREC_CONSUMER_WORKERS): Input should be greater than or equal to 1" \
        in result.output


def test_one_worker_serves_the_app_in_this_process(started, tmp_path):
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data"), "--port", "8301"])
    assert result.exit_code == 0, result.output
    [(kind, kwargs)] = started
    assert kind == "run" and kwargs["port"] == 8301 and kwargs["workers"] == 1


def test_several_workers_build_the_app_from_the_environment_the_command_prepares(started, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the command hands its workers stays in this test
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data"), "--port", "8302",
                                      "--workers", "2", "--log-level", "warning"])
    assert result.exit_code == 0, result.output
    [(kind, config, sock)] = started
    assert kind == "workers" and config.app == APP_FACTORY and config.factory and config.workers == 2
    assert config.port == 8302 and sock.proto == socket.IPPROTO_TCP
    assert os.environ["GDREC_CONSUMER_DATA_DIR"] == str((tmp_path / "data").resolve())
    assert os.environ["GDREC_CONSUMER_WORKERS"] == "2" and os.environ["GDREC_CONSUMER_LOG_LEVEL"] == "warning"
    assert os.environ["GDREC_CONSUMER_RELOAD_POLL_S"] == str(WORKER_RELOAD_POLL_S)
    assert f"every {WORKER_RELOAD_POLL_S:g} s" in result.output
    worker_app = create_app_from_environment()  # what a worker builds
    settings = worker_app.state.service.settings
    assert settings.data_dir == (tmp_path / "data").resolve() and settings.workers == 2
    assert settings.reload_poll_s == WORKER_RELOAD_POLL_S


def test_a_fixed_metrics_port_is_refused_with_several_workers(started, monkeypatch):
    monkeypatch.setenv("GDREC_CONSUMER_METRICS_PORT", "9300")
    result = CliRunner().invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code == 2 and "GDREC_CONSUMER_METRICS_PORT=9300 cannot be bound by 2 worker" in result.output
    assert started == []


def test_connections_of_the_shared_socket_get_tcp_nodelay():
    """The regression: uvicorn's shared socket has proto 0, and asyncio left Nagle's algorithm on for its
    connections."""
    config = uvicorn.Config("x:y", host="127.0.0.1", port=0, workers=2)
    bound = config.bind_socket()
    assert bound.proto == 0
    sock = tcp_socket(bound)
    assert sock.proto == socket.IPPROTO_TCP

    async def nodelay_of_an_accepted_connection() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accepted(_reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        value = await asyncio.wait_for(seen, 5)
        writer.close()
        server.close()
        return value

    assert asyncio.run(nodelay_of_an_accepted_connection()) != 0
