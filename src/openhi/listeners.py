"""One listening socket per API process on a shared port (SO_REUSEPORT), so the kernel spreads connections.

With one socket shared by every process (uvicorn's ``--workers``), whichever process wakes first accepts
every connection waiting, so a burst of keep-alive connections lands on one process (measured: 31 of 32 on
one of two) while the other idles. With SO_REUSEPORT each process listens on its own socket and the kernel
hashes each new connection to one of them.

The parent keeps a :class:`ReusePortSocket` that is bound but never listens: it holds the port and fails
early if the port is taken. uvicorn's supervisor hands the parent's sockets to each process it starts, by
pickling; this class pickles as "bind a new SO_REUSEPORT socket to the same address", so every process,
restarted ones included, gets its own listener.
"""

from __future__ import annotations

import socket
from typing import Any


def process_listener(host: str, port: int, *, reuse_port: bool = True) -> socket.socket:
    """A new socket bound to ``host:port``: by default one of this process in the port's SO_REUSEPORT group
    (the server calls ``listen``); ``reuse_port=False`` is a plain bind, which fails while anyone holds it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ReusePortSocket(socket.socket):
    """The parent's bound, not listening, socket; in a child process it becomes that child's listener."""

    @classmethod
    def holding(cls, host: str, port: int) -> ReusePortSocket:
        """Bind ``host:port`` with SO_REUSEPORT; raises OSError when another program holds the port.

        A plain bind first: SO_REUSEPORT alone would let a second openhi of the same user join the port
        of a running one (say, with another data directory) instead of failing as a server should.
        """
        process_listener(host, port, reuse_port=False).close()
        plain = process_listener(host, port)
        sock = cls(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.host, sock.port = host, port
        return sock

    host: str
    port: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (process_listener, (self.host, self.port))


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")
