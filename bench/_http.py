"""What the HTTP benchmarks share: a free loopback port, a service started as a real process and awaited on
/ready, and two closed-loop load generators (each client sends its next request when the previous one answered):
`load` (httpx, one thread and connection per client) and `load_raw` (asyncio streams writing prepared HTTP/1.1
requests on keep-alive connections and reading each response by its Content-Length: a few tens of microseconds of
client CPU per request, so that on a small machine the load generator leaves the cores to the service)."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx


def machine() -> str:
    """The CPU model and core count (from /proc/cpuinfo where there is one), for the benchmark's record."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def service(module: str, env: dict[str, str], port: int, timeout: float = 180.0) -> Iterator[str]:
    """Run `python -m <module> serve --port <port>` with `env` added; yield its URL once /ready answers 200.

    The service's output goes to a temporary file (a pipe nobody reads would fill up and stall the service); its
    tail is shown if the service dies."""
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen([sys.executable, "-m", module, "serve", "--port", str(port)], env={**os.environ, **env},
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{module} serve exited with code {server.returncode}: {log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{module} serve was not ready after {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.seek(0)
        lines = log.read().splitlines()
        log.close()
        if lines:
            logging.getLogger(__name__).info("%s wrote %d log line(s); the last: %s", module, len(lines), lines[-1])


def load(url: str, paths: Sequence[str], clients: int, headers: dict[str, str]) -> dict[str, float]:
    """Every path once, `clients` at a time, one keep-alive connection per client thread: requests per second,
    p50 / p99 latency in ms, and the response bytes per request (mean)."""
    chunks = [list(paths[i::clients]) for i in range(clients)]

    def worker(chunk: list[str]) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for path in chunk:
                started = time.perf_counter()
                response = client.get(path)
                out.append((time.perf_counter() - started, len(response.content)))
                response.raise_for_status()
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = [x for part in pool.map(worker, chunks) for x in part]
    seconds = time.perf_counter() - started
    return _summary(samples, seconds)


def load_raw(url: str, paths: Sequence[str], clients: int, headers: dict[str, str]) -> dict[str, float]:
    """`load`'s measurements with the asyncio load generator: every path once, `clients` keep-alive connections at a
    time in one event loop. Raises RuntimeError on a response that is not 200."""
    host, port = url.removeprefix("http://").split(":")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    requests = [f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode() for path in paths]

    async def client(chunk: list[bytes]) -> list[tuple[float, int]]:
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = []
        try:
            for request in chunk:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                out.append((time.perf_counter() - started, length))
                if status != b"200":
                    raise RuntimeError(f"{request.split(b' ')[1].decode()} answered {status.decode()}")
        finally:
            writer.close()
        return out

    async def run() -> list[tuple[float, int]]:
        parts = await asyncio.gather(*(client(requests[i::clients]) for i in range(clients)))
        return [sample for part in parts for sample in part]

    started = time.perf_counter()
    samples = asyncio.run(run())
    seconds = time.perf_counter() - started
    return _summary(samples, seconds)


def _summary(samples: list[tuple[float, int]], seconds: float) -> dict[str, float]:
    """Requests per second, p50 / p99 latency in ms and mean response bytes of (latency s, bytes) samples."""
    latencies = sorted(s for s, _ in samples)
    return {"requests": len(samples), "rps": len(samples) / seconds,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "bytes_per_request": statistics.fmean(b for _, b in samples)}
