"""The client and its store (store.py): open it, take over messages, accept durably, spill.

    start()         open the store for the run (ConfigError naming OUTBOX_PATH if it cannot be)
    claim loop      at once, then every store.CLAIM_EVERY s: renew the lease, take over this
                    identifier's messages nobody holds (spilled, or of a process that died),
                    oldest first, ahead of the queue; the sender waits for the first claim
    send_message()  OUTBOX_SYNC="always": the message is committed before it is queued
    delivered       written (or acknowledged, with acknowledgements on) or dropped: forgotten
    stop()          what is left is spilled instead of dropped (messages_spilled)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gevent

from .errors import QueueFull
from .frames import Item
from .outbox import DROP_OVERFLOW, DROP_STOPPED, DROP_UNACKED, in_hub, on_thread_of
from .sqlite_store import SQLiteStore
from .store import CLAIM_EVERY, MemoryStore, Store, seq_of

if TYPE_CHECKING:
    from .client import WebSocketClient

__all__ = ["claim_loop", "open_store", "send_durably", "spill_at_stop"]


def open_store(client: "WebSocketClient") -> Store:
    """The store for one run: SQLite when OUTBOX_PATH is set, else memory only."""
    s = client.settings
    if not s.OUTBOX_PATH:
        return MemoryStore()
    identifier = str(client.identifier() or type(client).__name__)
    store = SQLiteStore(
        str(s.OUTBOX_PATH), identifier, durable=s.OUTBOX_SYNC == "always",
        max_size=s.MAX_QUEUE_SIZE, strategy=s.QUEUE_OVERFLOW_STRATEGY, log=client.log,
    )
    store.open()
    return store


def claim_loop(client: "WebSocketClient", generation: int) -> None:
    store = client._store
    ready = client._store_ready  # this run's (a forked parent's copy of this loop must not set the child's)
    limit = client.settings.MAX_QUEUE_SIZE  # the first claim: all of them, ahead of anything sent since start()
    try:
        if store.path is None:
            return
        while client._current(generation):
            items = store.claim(limit)
            if items and client._current(generation):
                client._outbox_or_create().requeue_front(items)
                client.messages_reloaded += len(items)
                client.log.info(f"took over {len(items)} message(s) kept in {store.path}; they go out first")
            ready.set()
            gevent.sleep(CLAIM_EVERY)
            # Later claims (a process that died) take what the queue has room for.
            limit = client.settings.MAX_QUEUE_SIZE - len(client._outbox_or_create())
    finally:
        ready.set()  # the sender never waits on a claim that will not come


def send_durably(client: "WebSocketClient", item: Item) -> bool:
    """OUTBOX_SYNC="always": queue ``item`` once it is committed to the store."""
    outbox = client._outbox_or_create()
    store = client._store
    s = client.settings
    if in_hub():
        gevent.spawn(_send_durably_later, client, item)  # the hub never waits on a commit
        return True
    if s.QUEUE_OVERFLOW_STRATEGY != "drop_oldest" and len(outbox) >= s.MAX_QUEUE_SIZE:
        return outbox.put(item)  # full: refused (or QueueFull) as without a store, no disk touched
    if on_thread_of(client._home_hub):
        result = store.append([item])[0]
    else:
        result = store.append_from_thread([item])[0]
    if result is None:  # the store's bound, over every process of this identifier
        if s.QUEUE_OVERFLOW_STRATEGY == "raise":
            raise QueueFull(f"outbox file is full (MAX_QUEUE_SIZE={s.MAX_QUEUE_SIZE} for this identifier)")
        client.drops.count(item, DROP_OVERFLOW)
        return False
    if client._outbox is not outbox:
        # stop() closed the queue meanwhile, after the commit under way (it waits for that one):
        # a committed message is in the store, left for the next start like the queue; one that
        # was not committed is refused. Never queued where no run will send it.
        if isinstance(result, BaseException):
            client.drops.count(item, DROP_STOPPED)
            return False
        client.messages_spilled += 1
        return True
    if isinstance(result, BaseException):
        return outbox.put(item)  # the store failed (logged once, counted): memory only
    try:
        return outbox.put(result)
    except QueueFull:
        store.forget([result])
        raise


def _send_durably_later(client: "WebSocketClient", item: Item) -> None:
    try:
        if client._store.durable:
            send_durably(client, item)
        elif client.lifecycle.ended:
            client.drops.count(item, DROP_STOPPED)  # stop() ran before this greenlet did
        else:
            client._outbox_or_create().put(item)  # the store failed meanwhile: memory only
    except QueueFull:
        client.drops.count(item, DROP_OVERFLOW)  # nobody to raise to: counted as the other strategies are


def spill_at_stop(client: "WebSocketClient", unacked: list[Item], queued: list[Item]) -> int:
    """Keep what stop() leaves undelivered in the store; count the rest as dropped.
    Returns how many were neither delivered nor kept."""
    store = client._store
    spilled = store.spill(unacked + queued)
    store.close()
    client.outbox_errors += store.errors
    client._store = MemoryStore()
    if spilled.failed:
        # Messages already in the file stay there (under a lease that will be found dead): kept.
        lost_unacked = [item for item in unacked if seq_of(item) is None]
        lost_queued = [item for item in queued if seq_of(item) is None]
        for item in lost_unacked:
            client.drops.count(item, DROP_UNACKED, log=False)  # stop() logs the total once
        for item in lost_queued:
            client.drops.count(item, DROP_STOPPED, log=False)
        client.messages_spilled += len(unacked) + len(queued) - len(lost_unacked) - len(lost_queued)
        return len(lost_unacked) + len(lost_queued)
    client.messages_spilled += spilled.kept
    for item in spilled.evicted + spilled.refused:
        client.drops.count(item, DROP_OVERFLOW, log=False)
    if spilled.kept:
        client.log.info(f"{spilled.kept} undelivered message(s) kept in {store.path} for the next start")
    return len(spilled.refused)
