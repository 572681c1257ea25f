"""Run the emulator in a background thread of the calling process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from .app import build_app, wrap_with_gateway
from .faults import FaultPlan
from .state import EmulatorConfig, EmulatorState


@dataclass
class EmulatorServer:
    """A running emulator: its base URL for the SDK, and its state for tests."""

    base_url: str
    state: EmulatorState
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def faults(self) -> FaultPlan:
        return self.state.faults

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.state.close()


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Answers go out in two writes (head, body); accepted sockets inherit this, and
    # without it Nagle plus delayed ACK add 40 ms to every request (measured).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def start_emulator(
    config: EmulatorConfig | None = None,
    faults: FaultPlan | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> EmulatorServer:
    state = EmulatorState(config=config or EmulatorConfig(), faults=faults or FaultPlan())
    app = wrap_with_gateway(build_app(state), state)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="sora-emulator")
    thread.start()
    ready = threading.Event()
    for _ in range(500):
        if server.started:
            ready.set()
            break
        threading.Event().wait(0.01)
    if not ready.is_set():
        server.should_exit = True
        raise RuntimeError("the Sora emulator did not start within 5 seconds")
    return EmulatorServer(f"http://{host}:{bound_port}/v1", state, server, thread)


@contextmanager
def run_emulator(
    config: EmulatorConfig | None = None, faults: FaultPlan | None = None, **kwargs: object
) -> Iterator[EmulatorServer]:
    """Start an emulator on a free loopback port; yields it, stops it on exit.

    >>> with run_emulator(EmulatorConfig(render_seconds=1)) as emulator:
    ...     client = OpenAI(base_url=emulator.base_url, api_key="anything")
    """
    if kwargs:
        config = config or EmulatorConfig(**kwargs)  # type: ignore[arg-type]
    server = start_emulator(config, faults)
    try:
        yield server
    finally:
        server.stop()
