"""A TCP relay for fault tests: it sits between a client and a server on loopback and can
stall the link.

Every accepted connection gets its own connection to the upstream server; one thread
relays bytes both ways with real sockets. ``stall()`` stops the relaying in both
directions while every socket stays open, the way a half-dead network or a hung gateway
behaves: nothing is read, so what a side writes piles up in the kernel's buffers and
nobody hears a close. Connections accepted while stalled are connected upstream but
stalled too. ``heal()`` resumes: what was held is relayed (late), and a side that closed
or reset meanwhile is then noticed and its peer closed.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
from types import TracebackType

_CHUNK = 65536
_POLL_S = 0.05
_RESET_ERRORS = frozenset({errno.ECONNRESET, errno.EPIPE})


class _Pair:
    """One relayed connection: the client's socket and the upstream socket."""

    def __init__(self, number: int, client: socket.socket, upstream: socket.socket) -> None:
        self.number = number
        self.client = client
        self.upstream = upstream

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """A stallable TCP relay from ``port`` (127.0.0.1, chosen by the kernel) to
    ``upstream_port``."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        """The port clients connect to."""
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self.accepted = 0
        """Connections accepted so far."""
        self.relayed_up = 0
        """Bytes relayed from clients to the server."""
        self.client_ends: dict[int, str] = {}
        """How each connection's client side ended, by the connection's number (0 for the
        first accepted): ``reset`` (an abortive close) or ``eof`` (an orderly one)."""
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stall(self) -> None:
        """Stop relaying in both directions; every socket stays open."""
        self._stalled.set()

    def heal(self) -> None:
        """Relay again, starting with what piled up while stalled."""
        self._stalled.clear()

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- the relay thread -------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        registered: dict[socket.socket, _Pair] = {}
        try:
            while not self._stop.is_set():
                stalled = self._stalled.is_set()
                if stalled and registered:  # stop reading: bytes pile up in the kernel
                    for sock in list(registered):
                        selector.unregister(sock)
                    registered.clear()
                elif not stalled:
                    with self._lock:
                        pairs = list(self._pairs)
                    for pair in pairs:
                        for sock in (pair.client, pair.upstream):
                            if sock not in registered and sock.fileno() >= 0:
                                selector.register(sock, selectors.EVENT_READ)
                                registered[sock] = pair
                for key, _ in selector.select(_POLL_S):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif sock in registered and not self._stalled.is_set():
                        self._relay(sock, registered, selector)
        finally:
            selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(5)
        with self._lock:
            self._pairs.append(_Pair(self.accepted, client, upstream))
            self.accepted += 1

    def _relay(self, sock: socket.socket, registered: dict[socket.socket, _Pair],
               selector: selectors.BaseSelector) -> None:
        pair = registered[sock]
        client_reset = False
        try:
            data = sock.recv(_CHUNK)
        except ConnectionResetError:
            data, client_reset = b"", sock is pair.client
        except OSError:
            data = b""
        if data:
            try:
                pair.peer(sock).sendall(data)
                if sock is pair.client:
                    self.relayed_up += len(data)
                return
            except ConnectionResetError:
                client_reset = sock is pair.upstream
            except OSError:
                pass
        # One side closed or reset: close both. Linux reports a reset that follows unread
        # data as an end of file; the pending socket error tells them apart: ECONNRESET, or
        # EPIPE for a reset that followed the client's FIN (a shutdown, then an abortive
        # close, as quickfix closes its sockets).
        with contextlib.suppress(OSError):
            if pair.client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in _RESET_ERRORS:
                client_reset = True
        self.client_ends[pair.number] = "reset" if client_reset else "eof"
        for end in (pair.client, pair.upstream):
            if end in registered:
                selector.unregister(end)
                del registered[end]
        pair.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
