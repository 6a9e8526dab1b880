"""send_message's short cut (sender.write_now, Connection.send_now): with nothing queued or in flight
the message is written from the caller's greenlet, never waiting. What the socket does not take at
once goes out before any other bytes; a message whose frame never went whole is resent after an
abrupt failure; a burst still goes out in the sender's batches."""

import errno
import socket
import time

import gevent
from websockets.protocol import Protocol, Side, State

from hermes_gevent.connection import NOW_MAX, Connection
from hermes_gevent.frames import OP_TEXT
from hermes_gevent.outbox import DEEP
from hermes_gevent.sender import MAX_BATCH_ITEMS, WRITE_NOW_ALWAYS

from .conftest import Recorder, t, wait_until
from .peer import tcp_pair


class Stingy:
    """The client's socket, taking only ``take`` bytes of the next non-blocking send (0: EAGAIN)."""

    def __init__(self, sock, take):
        self.sock, self.take, self.family = sock, take, sock.family
        self.timeouts = []

    def send(self, data, *args):
        if self.sock.gettimeout() == 0.0 and self.take is not None:
            take, self.take = self.take, None
            if not take:
                raise BlockingIOError(errno.EAGAIN, "full")
            return self.sock.send(data[:take])
        return self.sock.send(data, *args)

    def sendmsg(self, buffers, *args):
        if self.sock.gettimeout() == 0.0 and self.take is not None:
            return self.send(b"".join(buffers))
        return self.sock.sendmsg(buffers, *args)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def server_messages(sock, count, proto=None):
    proto = proto or Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    got = []
    with gevent.Timeout(t(5)):
        while len(got) < count:
            proto.receive_data(sock.recv(65536))
            got += [event.data.decode() for event in proto.events_received()]
    return got


def test_a_message_the_socket_takes_in_part_goes_whole_before_anything_else():
    client_sock, server_sock = tcp_pair()
    conn = Connection(Stingy(client_sock, 5), 2**20)
    assert conn.tracks_acks
    first = (OP_TEXT, b"first message")
    assert conn.send_now(first)
    # Until the rest is written, the message is not in the kernel whole: an abrupt failure resends it.
    assert conn.unacknowledged()[-1] is first
    assert not conn.send_now((OP_TEXT, b"not now"))  # something is owed: the caller queues it
    conn.send_frames([(OP_TEXT, b"second"), (OP_TEXT, b"third")])  # the rest goes first
    assert server_messages(server_sock, 3) == ["first message", "second", "third"]
    gevent.sleep(0)  # the greenlet spawned for the rest finds nothing left to write
    assert wait_until(lambda: conn.unacknowledged() == [], t(2))  # the server's TCP has them all
    client_sock.close()
    server_sock.close()


def test_the_rest_is_written_without_another_write():
    client_sock, server_sock = tcp_pair()
    conn = Connection(Stingy(client_sock, 3), 2**20)
    assert conn.send_now((OP_TEXT, b"alone"))
    assert server_messages(server_sock, 1) == ["alone"]
    assert conn.send_now((OP_TEXT, b"next"))
    assert server_messages(server_sock, 1) == ["next"]
    client_sock.close()
    server_sock.close()


def test_a_full_socket_writes_nothing_and_says_so():
    client_sock, server_sock = tcp_pair()
    conn = Connection(Stingy(client_sock, 0), 2**20)
    writes = conn.writes
    assert not conn.send_now((OP_TEXT, b"queued instead"))
    assert conn.writes == writes and conn.unacknowledged() == []
    assert client_sock.gettimeout() is None  # the socket's timeout is back
    conn.send_frames([(OP_TEXT, b"by the sender")])
    assert server_messages(server_sock, 1) == ["by the sender"]
    client_sock.close()
    server_sock.close()


def test_echo_round_trips_go_direct_and_a_burst_goes_in_batches(peer, make_client):
    peer.echo = True
    got = Recorder()
    client = make_client(connector=peer.connector, url=peer.url, on_message=got)
    client.start()
    assert client.wait_until_connected(t(5))
    conn = client.run.session.conn
    for i in range(20):  # send, wait for the reply: each written from send_message, one write each
        writes = conn.writes
        assert client.send_message(f"echo-{i}")
        assert conn.writes == writes + 1 and client.queue_size == 0
        assert got.wait(i + 1)[-1] == f"echo-{i}"
    writes = conn.writes
    for i in range(100):  # a burst: the first goes at once, the rest in the sender's batches
        client.send_message(f"burst-{i}")
    assert client.queue_size == 99
    assert client.flush(t(5))
    assert conn.writes - writes < 10
    assert peer.wait_messages(120) == [f"echo-{i}" for i in range(20)] + [f"burst-{i}" for i in range(100)]
    assert client.status()["messages_sent"] == 120


def test_a_large_frame_the_socket_takes_in_part_goes_whole_before_anything_else():
    client_sock, server_sock = tcp_pair()
    conn = Connection(Stingy(client_sock, 1000), 2**20)
    large = (OP_TEXT, bytes(range(97, 123)) * 2520)  # 65,520 bytes: written vectored (sendmsg)
    assert conn.send_now(large)
    assert conn.unacknowledged()[-1] is large
    conn.send_frames([(OP_TEXT, b"after")])
    assert server_messages(server_sock, 2) == [large[1].decode(), "after"]
    client_sock.close()
    server_sock.close()


def test_the_kernel_taking_part_of_a_frame_on_a_gevent_socket():
    """On a gevent socket send_now writes on the descriptor itself (os.writev, never a wait): when
    the kernel's buffer fills (taking part of a frame, or refusing the next), what it took counts as
    handed, nothing else is written before a cut frame's rest, and every message arrives whole and
    in order."""
    client_sock, server_sock = tcp_pair()
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    conn = Connection(client_sock, 2**20)
    assert conn._plain_gevent  # the descriptor path, not gevent's socket calls
    sent = []
    for n in range(500):  # the server reads nothing yet: the buffers fill
        message = (OP_TEXT, (b"%03d" % n) * 10_000)
        if not conn.send_now(message):
            break
        sent.append(message)
    assert 0 < len(sent) < 500, "the kernel never refused a write"
    assert conn.unacknowledged()[-1] is sent[-1]  # the last one went in part (or its bytes wait unacknowledged)
    reader = gevent.spawn(server_messages, server_sock, len(sent) + 1)
    conn.send_frames([(OP_TEXT, b"after")])  # waits for room, after the rest of the cut frame
    assert reader.get(timeout=t(10)) == [m[1].decode() for m in sent] + ["after"]
    client_sock.close()
    server_sock.close()


class WithoutSendmsg:
    """A plain TCP socket as a custom connector may hand one over: no ``sendmsg``."""

    def __init__(self, sock):
        self.sock, self.family = sock, sock.family

    def __getattr__(self, name):
        if name == "sendmsg":
            raise AttributeError(name)
        return getattr(self.sock, name)


def test_a_large_frame_goes_joined_on_a_socket_without_sendmsg():
    client_sock, server_sock = tcp_pair()
    conn = Connection(WithoutSendmsg(client_sock), 2**20)
    assert conn.tracks_acks
    large = (OP_TEXT, b"y" * 10_000)  # over VECTOR_MIN: header and payload would go as two buffers
    assert conn.send_now(large)
    assert server_messages(server_sock, 1) == [large[1].decode()]
    client_sock.close()
    server_sock.close()


def test_a_stream_of_large_messages_goes_direct_and_in_order(peer, make_client):
    """Messages of WRITE_NOW_ALWAYS bytes and more gain little from batches: send_message writes each
    at once while the sender has nothing to do, once per loop turn, even right after the sender
    wrote; larger than NOW_MAX, the sender writes it."""
    client = make_client(connector=peer.connector, url=peer.url)
    client.start()
    assert client.wait_until_connected(t(5))
    conn = client.run.session.conn
    bodies = [f"{i:05d}".encode() * (WRITE_NOW_ALWAYS // 5 + 1 + i * 100) for i in range(20)]
    assert all(WRITE_NOW_ALWAYS <= len(body) <= NOW_MAX for body in bodies)
    direct = 0
    for body in bodies:
        writes, sent = conn.writes, client.status()["messages_sent"]
        assert client.send_message(body)
        if client.queue_size == 0:  # the socket took it at once (else queued, and the sender writes it)
            assert conn.writes == writes + 1 and client.status()["messages_sent"] == sent + 1
            direct += 1
        gevent.sleep(0)
    assert direct >= 10
    too_large = b"z" * (NOW_MAX + 1)
    assert client.send_message(too_large)
    assert client.queue_size == 1  # queued: the sender writes what is larger than NOW_MAX
    assert client.flush(t(5))
    assert peer.wait_messages(21) == bodies + [too_large]
    assert client.status()["messages_sent"] == 21


def test_a_full_socket_takes_no_part_of_a_large_frame_either():
    client_sock, server_sock = tcp_pair()
    conn = Connection(Stingy(client_sock, 0), 2**20)
    writes = conn.writes
    assert not conn.send_now((OP_TEXT, b"y" * 20_000))  # the vectored path (sendmsg)
    assert conn.writes == writes and conn.unacknowledged() == []
    assert client_sock.gettimeout() is None
    conn.send_frames([(OP_TEXT, b"y" * 20_000)])
    assert server_messages(server_sock, 1) == ["y" * 20_000]
    client_sock.close()
    server_sock.close()


def test_a_burst_of_large_messages_arrives_whole_and_in_order(peer, make_client):
    """Large messages sent without yielding: the first is written at once, the rest wait for the
    sender, which writes them in batches (vectored writes of up to 256 KiB)."""
    client = make_client(connector=peer.connector, url=peer.url)
    client.start()
    assert client.wait_until_connected(t(5))
    conn = client.run.session.conn
    gevent.sleep(0)
    writes = conn.writes
    bodies = [f"{i:03d}".encode() * 20_000 for i in range(300)]  # 60,000 bytes each
    for body in bodies:
        assert client.send_message(body)
    assert client.queue_size == 299  # the caller did not yield: one direct write, the rest batched
    assert conn.writes == writes + 1
    assert client.flush(t(20))
    assert conn.writes - writes <= 1 + 300 // 4 + 10  # four to a 256 KiB batch (a few more where the socket filled)
    assert peer.wait_messages(300, t(20)) == bodies
    assert client.status()["messages_sent"] == 300


def test_a_greenlet_that_keeps_the_hub_does_not_fill_the_queue(peer, make_client):
    """A request greenlet serving request after request without yielding keeps the hub: the sender
    cannot run. Once the queue holds DEEP of MAX_QUEUE_SIZE and the sender has not written for
    HELP_AFTER, send_message writes a batch itself (never waiting): nothing is dropped, in order."""
    client = make_client(connector=peer.connector, url=peer.url, max_queue_size=1000)
    client.start()
    assert client.wait_until_connected(t(5))
    gevent.sleep(0.1)  # the sender has written nothing for longer than HELP_AFTER
    deepest = 0
    for i in range(5000):  # about 0.5 s without a yield (100 us of "request" per message)
        assert client.send_message(f"m-{i:05d}")
        deepest = max(deepest, client.queue_size)
        until = time.perf_counter() + 0.0001
        while time.perf_counter() < until:
            pass
    assert client.status()["messages_dropped"] == 0
    assert deepest < 1000 * DEEP + MAX_BATCH_ITEMS
    assert client.flush(t(5))
    assert peer.wait_messages(5000, t(10)) == [f"m-{i:05d}" for i in range(5000)]
    assert client.status()["messages_sent"] == 5000


def test_the_ledger_counts_the_frames_a_write_took_whole():
    """whole_frames/record_written, pure: the messages a write took whole are ledgered; a cut-off
    frame's bytes are ledgered without its message (it was never delivered whole)."""
    from hermes_gevent.ledger import KernelLedger, whole_frames

    assert whole_frames([10, 20, 30], 0) == (0, 0)
    assert whole_frames([10, 20, 30], 29) == (1, 10)
    assert whole_frames([10, 20, 30], 30) == (2, 30)
    assert whole_frames([10, 20, 30], 60) == (3, 60)
    ledger = KernelLedger()
    a, b, c = (OP_TEXT, b"a"), (OP_TEXT, b"b"), (OP_TEXT, b"c")
    assert ledger.record_written([a, b, c], [10, 20, 30], 35) == (2, 30)
    assert ledger.size == 35
    assert ledger.unacknowledged(35) == [a, b]  # the cut-off c is the caller's to send again
    assert ledger.unacknowledged(5) == []  # only the cut bytes unacknowledged: a and b arrived
    assert ledger.record_written([c], [30], 0) == (0, 0) and ledger.size == 35  # nothing taken: nothing ledgered
