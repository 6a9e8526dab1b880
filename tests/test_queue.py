"""The send queue: bound, overflow strategies, FIFO across reconnects, encoding, threads."""


import gevent
import gevent.monkey
import gevent.threadpool
import pytest

from hermes_gevent import QueueFull

from .conftest import t, wait_until


def down_client(make_client, proxy_to, server, **options):
    """A started client whose server is unreachable for now (the proxy refuses)."""
    proxy = proxy_to(server.port)
    proxy.refuse()
    client = make_client(url=proxy.url, retry_delay=t(0.05), max_retry_delay=t(0.1), **options)
    client.start()
    return client, proxy


def test_drop_oldest_keeps_the_newest_and_reports_every_drop(server, proxy_to, make_client, caplog_hermes):
    drops = []
    client, proxy = down_client(make_client, proxy_to, server, max_queue_size=10,
                                on_drop=lambda msg, reason: drops.append((msg, reason)))
    results = [client.send_message(f"m-{i}") for i in range(500)]
    assert all(results)  # the new message is always accepted under drop_oldest
    wait_until(lambda: len(drops) == 490, t(2), "drop hooks")
    assert drops[:3] == [("m-0", "overflow"), ("m-1", "overflow"), ("m-2", "overflow")]
    assert client.status()["messages_dropped"] == 490 and client.status()["queue_size"] == 10 == client.queue_size
    drop_lines = [r for r in caplog_hermes.records if "dropped" in r.getMessage()]
    assert 1 <= len(drop_lines) <= 2  # rate-limited: not one line per message
    proxy.reopen()
    server.wait_for(lambda: len(server.texts()) == 10, t(10), "the survivors")
    assert server.texts() == [f"m-{i}" for i in range(490, 500)]


def test_drop_newest_keeps_the_oldest(server, proxy_to, make_client):
    client, proxy = down_client(make_client, proxy_to, server, max_queue_size=10,
                                queue_overflow_strategy="drop_newest")
    results = [client.send_message(f"m-{i}") for i in range(30)]
    assert results == [True] * 10 + [False] * 20
    proxy.reopen()
    server.wait_for(lambda: len(server.texts()) == 10, t(10), "the oldest ten")
    assert server.texts() == [f"m-{i}" for i in range(10)]
    assert client.status()["drops_by_reason"] == {"overflow": 20}


def test_raise_strategy_raises_queue_full_in_the_caller(server, proxy_to, make_client):
    client, proxy = down_client(make_client, proxy_to, server, max_queue_size=3, queue_overflow_strategy="raise")
    for i in range(3):
        assert client.send_message(f"m-{i}")
    with pytest.raises(QueueFull, match="MAX_QUEUE_SIZE=3"):
        client.send_message("m-3")
    assert client.status()["messages_dropped"] == 0  # refused, not accepted: nothing to count
    proxy.reopen()
    server.wait_for(lambda: len(server.texts()) == 3, t(10), "the three")


@pytest.mark.parametrize("bad", [42, 3.5, None, object(), {1, 2}, ("a",)])
def test_unsupported_types_raise_type_error_in_the_caller(server, make_client, bad):
    client = make_client(url=server.url)
    with pytest.raises(TypeError):
        client.send_message(bad)
    assert client.status()["queue_size"] == 0


def test_unencodable_messages_raise_value_error_in_the_caller(server, make_client):
    client = make_client(url=server.url, max_message_size=100)
    with pytest.raises(ValueError):
        client.send_message("\ud800")  # lone surrogate: not UTF-8
    with pytest.raises(ValueError, match="MAX_MESSAGE_SIZE"):
        client.send_message(b"x" * 101)
    with pytest.raises(TypeError):
        client.send_message({"when": object()})  # not JSON


def test_after_stop_send_returns_false_and_counts_the_drop(server, make_client):
    drops = []
    client = make_client(url=server.url, on_drop=lambda m, r: drops.append((m, r)))
    client.start()
    client.stop()
    assert client.send_message("late") is False
    assert drops == [("late", "stopped")] and client.status()["messages_dropped"] == 1


def test_a_failed_write_goes_back_to_the_head_of_the_queue(server, proxy_to, make_client):
    """Kill the connection under a steady stream: every message arrives, in order, once."""
    proxy = proxy_to(server.port)
    client = make_client(url=proxy.url)
    client.start()
    assert client.wait_until_connected(t(5))
    total = 3000

    def produce():
        for i in range(total):
            client.send_message(f"n-{i}")
            if i % 100 == 0:
                gevent.sleep(0.005)

    producer = gevent.spawn(produce)
    server.wait_for(lambda: len(server.texts()) > 500, t(10), "traffic")
    server.command(cmd="close", code=1001)  # graceful: nothing the server accepted is lost
    producer.join(t(20))
    server.wait_for(lambda: len(server.texts()) >= total, t(20), "every message")
    assert server.texts() == [f"n-{i}" for i in range(total)]
    assert client.status()["reconnects"] == 1


def test_os_threads_send_100k_numbered_messages_exactly_once(server, make_client):
    server.command(cmd="mode", quiet=False)
    client = make_client(url=server.url, max_queue_size=200_000)
    client.start()
    assert client.wait_until_connected(t(5))
    threads, per_thread = 4, 25_000
    pool = gevent.threadpool.ThreadPool(threads)

    real_ident = gevent.monkey.get_original("_thread", "get_ident")
    idents = set()

    def produce(tid):
        idents.add(real_ident())
        ok = 0
        for i in range(per_thread):
            ok += client.send_message(f"{tid}:{i}")
        return ok

    results = [pool.spawn(produce, tid) for tid in range(threads)]
    accepted = [r.get(timeout=t(60)) for r in results]
    pool.kill()
    assert accepted == [per_thread] * threads
    assert real_ident() not in idents  # really other OS threads, not greenlets
    server.wait_for(lambda: len(server.of("msg")) >= threads * per_thread, t(60), "100k messages")
    texts = server.texts()
    assert len(texts) == len(set(texts)) == threads * per_thread
    for tid in range(threads):  # each producer's own order is kept
        mine = [int(x.split(":")[1]) for x in texts if x.startswith(f"{tid}:")]
        assert mine == list(range(per_thread))
