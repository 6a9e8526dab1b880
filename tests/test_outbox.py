"""The outbox on its own: batches, acknowledgement, re-delivery of a failed batch, hand-off."""

import gevent
import gevent.threadpool
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_gevent.outbox import Outbox


def make(maxsize=100, strategy="drop_oldest"):
    drops = []
    return Outbox(maxsize, strategy, lambda item, reason: drops.append((item, reason))), drops


def item(n):
    return (1, f"m-{n}".encode())


def test_an_unacknowledged_batch_is_taken_again_first_and_in_order():
    box, _ = make()
    for n in range(5):
        box.put(item(n))
    first = box.take(max_items=3, max_bytes=1 << 20, timeout=0)
    assert first == [item(0), item(1), item(2)]
    box.put(item(5))
    # the write of `first` failed: no ack, so the same batch comes back, before anything newer
    assert box.take(max_items=3, max_bytes=1 << 20, timeout=0) == first
    assert len(box) == 6
    assert box.ack() == 3
    assert box.take(max_items=10, max_bytes=1 << 20, timeout=0) == [item(3), item(4), item(5)]
    box.ack()
    assert len(box) == 0 and box.wait_empty(0)


def test_batches_respect_the_byte_budget():
    box, _ = make()
    for n in range(10):
        box.put((2, b"x" * 400))
    assert len(box.take(max_items=100, max_bytes=1000, timeout=0)) == 3  # stops once past 1000 bytes


def test_drop_oldest_never_drops_the_batch_in_flight():
    box, drops = make(maxsize=3)
    for n in range(3):
        box.put(item(n))
    batch = box.take(max_items=2, max_bytes=1 << 20, timeout=0)
    box.put(item(3))  # full: the oldest *queued* one goes, not the batch being written
    assert drops == [(item(2), "overflow")]
    assert batch == [item(0), item(1)]


def test_take_waits_for_a_message_and_times_out():
    box, _ = make()
    assert box.take(1, 1 << 20, timeout=0.01) == []
    gevent.spawn_later(0.01, box.put, item(7))
    assert box.take(1, 1 << 20, timeout=2) == [item(7)]


def test_hand_off_from_an_os_thread_keeps_order():
    box, _ = make(maxsize=10_000)
    pool = gevent.threadpool.ThreadPool(1)
    pool.spawn(lambda: [box.put(item(n)) for n in range(1000)]).get(timeout=10)
    pool.kill()
    assert box.wait_empty(0) is False  # queued, not yet written
    taken = []
    while len(taken) < 1000:
        batch = box.take(max_items=100, max_bytes=1 << 20, timeout=2)
        assert batch
        taken += batch
        box.ack()
    assert taken == [item(n) for n in range(1000)]


def test_a_partly_written_batch_keeps_only_its_unwritten_tail():
    box, _ = make()
    for n in range(5):
        box.put(item(n))
    batch = box.take(max_items=5, max_bytes=1 << 20, timeout=0)
    assert box.settle(batch, 2) == 2  # two reached the kernel whole
    assert box.take(5, 1 << 20, timeout=0) == [item(2), item(3), item(4)]


def test_unacknowledged_messages_go_out_before_everything_else():
    box, _ = make()
    for n in range(6):
        box.put(item(n))
    batch = box.take(max_items=2, max_bytes=1 << 20, timeout=0)  # m-0, m-1 written...
    box.ack()
    batch = box.take(max_items=2, max_bytes=1 << 20, timeout=0)  # m-2, m-3 being written
    box.requeue_front([item(0), item(1)])  # ...but never acknowledged by the peer
    box.settle(batch, 0)  # and this write failed before reaching the kernel
    assert len(box) == 6
    order = []
    while len(order) < 6:
        order += box.take(max_items=10, max_bytes=1 << 20, timeout=0)
        box.ack()
    assert order == [item(n) for n in range(6)]


def test_wake_ends_a_waiting_take_without_a_message():
    box, _ = make()
    gevent.spawn_later(0.01, box.wake)
    assert box.take(1, 1 << 20, timeout=5) == []
    assert len(box) == 0 and box.wait_empty(0)
    box.put(item(1))
    box.wake()
    assert box.take(5, 1 << 20, timeout=0) == [item(1)]  # markers never show up as messages


def test_many_messages_to_resend_go_out_a_batch_at_a_time_in_order():
    """Thousands to resend (a store's takeover, the kernel's unacknowledged writes) are taken
    within the batch limits - one write of them all would hold the hub - and in order, even
    when a write fails part-way and more are requeued meanwhile."""
    box, _ = make(maxsize=10_000)
    for n in range(1000, 1010):
        box.put(item(n))
    box.requeue_front([item(n) for n in range(100, 1000)])
    first = box.take(max_items=256, max_bytes=1 << 20, timeout=0)
    assert first == [item(n) for n in range(100, 356)]
    box.settle(first, 6)  # a write failed after 6: the rest of the batch stays first
    box.requeue_front([item(n) for n in range(100)])  # older still: before everything
    sent = []
    for _ in range(100):
        batch = box.take(max_items=256, max_bytes=1 << 20, timeout=0)
        if not batch:
            break
        assert len(batch) <= 256
        sent += batch
        box.ack()
    assert sent == [item(n) for n in range(100)] + [item(n) for n in range(106, 1010)]
    assert len(box) == 0


def test_the_batch_byte_budget_holds_for_messages_to_resend():
    box, _ = make()
    box.requeue_front([(2, b"x" * 400) for _ in range(10)])
    assert len(box.take(max_items=100, max_bytes=1000, timeout=0)) == 3


def test_discard_leaves_the_batch_in_flight_alone_until_the_next_take():
    """A write may be under way, settling its batch by position: discard() removes what it must
    from the queue at once, and from the batch in flight only at the sender's next take()."""
    outbox = Outbox(100, "drop_oldest", lambda item, reason: None)
    for n in range(6):
        outbox.put((1, f"m-{n}".encode(), "", n) if n % 2 else (1, f"m-{n}".encode()))
    batch = outbox.take(3, 1 << 20, timeout=0)
    assert [item[1] for item in batch] == [b"m-0", b"m-1", b"m-2"]
    removed = outbox.discard(lambda item: len(item) > 3)  # the stored ones (with a number)
    assert [item[1] for item in removed] == [b"m-3", b"m-5"]
    assert [item[1] for item in batch] == [b"m-0", b"m-1", b"m-2"]  # untouched while it may be written
    outbox.settle(batch, 1)  # m-0 written
    assert [item[1] for item in outbox.take(10, 1 << 20, timeout=0)] == [b"m-2"]  # m-1 left with the take
    outbox.ack()
    assert [item[1] for item in outbox.take(10, 1 << 20, timeout=0)] == [b"m-4"]


def test_a_discarded_batch_leaving_at_take_leaves_the_outbox_empty_while_the_sender_waits():
    """The batch in flight, all discarded (taken over while the process was frozen): the sender's
    next take() drops it and, nothing else queued, waits for a message. Meanwhile the outbox is
    empty for everyone who asks - len(), flush() - not only after the next message."""
    box, _ = make()
    for n in range(3):
        box.put(item(n))
    box.take(10, 1 << 20, timeout=0)
    box.discard(lambda held: True)
    assert len(box) == 3  # in flight: a write may be under way
    sender = gevent.spawn(box.take, 10, 1 << 20, 5)
    gevent.sleep(0)  # the sender drops the batch and waits
    assert not sender.ready()
    assert len(box) == 0
    assert box.wait_empty(0.5)
    box.wake()
    assert sender.get(timeout=1) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "put", "put", "take", "settle", "requeue", "discard"]),
                          st.integers(0, 7)), max_size=60))
def test_a_put_is_refused_exactly_when_the_outbox_holds_maxsize(ops):
    """put() sizes the outbox from a count of what left the queue (in flight, to resend, ahead),
    kept by the methods that move messages: whatever they did, a put under drop_newest is refused
    exactly when the outbox, counted from scratch, is full; and len() (from the same kept count)
    always agrees with that count."""
    box, drops = make(maxsize=4, strategy="drop_newest")
    batch, n = [], 0
    for op, k in ops:
        assert len(box) == box._queued_here()  # the from-scratch count (no thread hand-off here)
        if op == "put":
            full = box._queued_here() >= box.maxsize
            assert box.put(item(n)) is not full
            n += 1
        elif op == "take" and len(box):
            batch = box.take(max(1, k), 1 << 20, timeout=0)
        elif op == "settle" and batch:
            box.settle(batch, min(k, len(batch)))
        elif op == "requeue":
            box.requeue_front([item(1000 + i) for i in range(k % 3)])
        elif op == "discard":
            box.discard(lambda held: held[1].endswith(str(k).encode()))
    assert all(reason == "overflow" for _, reason in drops)
