"""What the order-entry gateway needs around quickfix: the data dictionaries the wheel
installs, and listening on one address although quickfix 1.16 binds every interface."""

from __future__ import annotations

import os
import socket
import stat
import sys
import sysconfig
from pathlib import Path

import quickfix as fix

from actors.errors import ConfigError
from messages.fix_spec import data_dictionary_settings


def spec_dir() -> Path:
    """The directory holding the FIX data dictionaries the quickfix wheel installs."""
    candidates = (
        Path(sysconfig.get_path("data")) / "share" / "quickfix",
        Path(sys.prefix) / "share" / "quickfix",
        Path(fix.__file__).resolve().parent / "spec",
    )
    for candidate in candidates:
        if (candidate / "FIX44.xml").is_file():
            return candidate
    raise ConfigError(f"quickfix data dictionaries not found in {candidates}")


def dictionary_settings(begin_string: str, directory: Path) -> dict[str, str]:
    """quickfix settings selecting the data dictionaries of ``begin_string``."""
    try:
        return data_dictionary_settings(begin_string, spec_dir(), directory)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def native_accept_host() -> bool:
    """True when this quickfix build can bind its acceptor to one address itself."""
    return hasattr(fix, "SOCKET_ACCEPT_HOST")


def spare_port() -> int:
    """A loopback TCP port that was free a moment ago (quickfix cannot listen on 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening_descriptor(port: int) -> int | None:
    """The descriptor of this process's TCP socket listening on ``port``, if any."""
    for name in os.listdir("/proc/self/fd"):
        try:
            descriptor = int(name)
            if not stat.S_ISSOCK(os.fstat(descriptor).st_mode):
                continue
            with socket.socket(fileno=os.dup(descriptor)) as probe:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                address = probe.getsockname()
        except (OSError, ValueError):
            continue  # closed meanwhile, or not an inet socket
        if listening and isinstance(address, tuple) and address[1] == port:
            return descriptor
    return None


def listen_on_host(spare: int, host: str, port: int) -> None:
    """Move quickfix's listening socket from ``spare`` (every interface) to ``host``:``port``.

    A socket bound to ``host``:``port`` takes the descriptor number of quickfix's listening
    socket (``dup2``), so its next ``accept`` takes connections from the new socket; one
    connection to the spare port releases the accept already waiting on the old one.
    Raises ``OSError`` when quickfix's socket is not found or the address cannot be bound.
    """
    descriptor = _listening_descriptor(spare)
    if descriptor is None:
        raise OSError(f"quickfix's listening socket on port {spare} not found")
    public = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        public.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        public.bind((host, port))
        public.listen(128)
        os.dup2(public.fileno(), descriptor, inheritable=False)
    finally:
        public.close()  # quickfix's descriptor keeps the socket open
    try:
        with socket.create_connection(("127.0.0.1", spare), timeout=2.0):
            pass
    except OSError:
        pass  # nothing was waiting on the old socket
