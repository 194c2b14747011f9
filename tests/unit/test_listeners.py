"""SO_REUSEPORT listeners: the parent's holder pickles into a fresh listener per process; connections spread."""

from __future__ import annotations

import pickle
import select
import socket
from multiprocessing.reduction import ForkingPickler

import pytest

from openhi.listeners import ReusePortSocket, reuse_port_supported
from openhi.testing.server import free_port

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT is not available here")


def test_the_holder_pickles_as_a_new_socket_bound_to_the_same_port() -> None:
    port = free_port()
    holder = ReusePortSocket.holding("127.0.0.1", port)
    try:
        data = bytes(ForkingPickler.dumps([holder]))  # how uvicorn's supervisor hands sockets to a process
        (listener,) = pickle.loads(data)
        try:
            assert type(listener) is socket.socket and listener.fileno() != holder.fileno()
            assert listener.getsockname() == ("127.0.0.1", port)
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        finally:
            listener.close()
    finally:
        holder.close()


def test_the_port_is_held_against_other_programs() -> None:
    port = free_port()
    holder = ReusePortSocket.holding("127.0.0.1", port)
    try:
        other = socket.socket()
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # no SO_REUSEPORT: refused while openhi holds the port
        other.close()
    finally:
        holder.close()


def test_a_second_server_on_the_same_port_fails_instead_of_joining() -> None:
    port = free_port()
    first = ReusePortSocket.holding("127.0.0.1", port)
    try:
        listener = pickle.loads(bytes(ForkingPickler.dumps(first)))  # a running API process's listener
        listener.listen(8)
        with pytest.raises(OSError):
            ReusePortSocket.holding("127.0.0.1", port)
        listener.close()
    finally:
        first.close()


def test_connections_spread_over_the_listeners_and_never_reach_the_holder() -> None:
    port = free_port()
    holder = ReusePortSocket.holding("127.0.0.1", port)
    listeners = [pickle.loads(bytes(ForkingPickler.dumps(holder))) for _ in range(2)]
    clients = []
    try:
        for sock in listeners:
            sock.listen(64)
        for _ in range(64):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        counts = []
        for sock in listeners:
            sock.setblocking(False)
            n = 0
            while select.select([sock], [], [], 0.2)[0]:
                conn, _ = sock.accept()
                conn.close()
                n += 1
            counts.append(n)
        assert sum(counts) == 64
        assert min(counts) >= 10, counts  # hashed over both (a binomial split; all on one is ~1e-19)
    finally:
        for c in clients:
            c.close()
        for sock in listeners:
            sock.close()
        holder.close()
