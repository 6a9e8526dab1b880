"""``send_message(msg, transaction=T)``: the message row written in the app's own transaction.

``T`` is a SQLAlchemy ``Connection`` or ``Session`` (a ``scoped_session`` such as Flask-SQLAlchemy's
``db.session`` included) on the outbox's PostgreSQL database. ``enlist`` inserts the row through
``T`` - held by nobody - and watches ``T`` for the end of its transaction:

- a Session's ``after_commit`` fires once the database COMMIT succeeded;
- a Connection's ``commit`` event fires *before* its COMMIT, so it only says "look now": the
  client then takes the rows (``Store.take``) as soon as they are visible, which is the proof;
- a rollback forgets them (there are no rows).

The client takes the committed rows and queues them behind what is queued (sent in commit order);
if this process dies first, or its client is not running, they are rows nobody holds: a client of
the identifier takes them at its next claim (start(), or within RENEW_EVERY on any host).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from .errors import ConfigError
from .frames import Item
from .pg_store import insert_sql
from .store_url import StoreLocation

__all__ = ["Committed", "enlist"]

#: Called with the numbers of rows a transaction wrote, and whether its COMMIT is known to
#: have succeeded (False: it is under way; the rows show when it does).
Committed = Callable[[list[int], bool], None]


class _Watch:
    __slots__ = ("seqs", "on_commit")

    def __init__(self, on_commit: Committed) -> None:
        self.seqs: list[int] = []
        self.on_commit = on_commit


_watched: "weakref.WeakKeyDictionary[Any, _Watch]" = weakref.WeakKeyDictionary()


def enlist(transaction: Any, location: StoreLocation, identifier: str, item: Item, on_commit: Committed) -> int:
    """Insert ``item`` through ``transaction``; ``on_commit`` hears of it once committed. Returns
    the row's number. The app's own errors (a database that is down) raise here, as they should."""
    try:
        import sqlalchemy
        from sqlalchemy import event
        from sqlalchemy.orm import Session, scoped_session
    except ImportError:
        raise ConfigError("transaction= takes a SQLAlchemy Connection or Session; SQLAlchemy is not installed.") from None
    target = transaction() if isinstance(transaction, scoped_session) else transaction
    if isinstance(target, Session):
        session = True
    elif isinstance(target, sqlalchemy.engine.Connection):
        session = False
    else:
        raise TypeError(f"transaction= takes a SQLAlchemy Connection or Session, not {type(transaction).__name__}")
    _check_database(target, location)
    ack_id = item[2] if len(item) > 2 else ""
    seq = int(target.execute(sqlalchemy.text(insert_sql(location.table)), {
        "identifier": identifier, "opcode": item[0], "payload": item[1], "ack_id": ack_id,
    }).scalar_one())
    watch = _watched.get(target)
    if watch is None:
        watch = _watched[target] = _Watch(on_commit)
        if session:
            event.listen(target, "after_commit", lambda s: _fire(watch, True))
            event.listen(target, "after_rollback", lambda s: watch.seqs.clear())
        else:
            event.listen(target, "commit", lambda c: _fire(watch, False))
            event.listen(target, "rollback", lambda c: watch.seqs.clear())
    watch.on_commit = on_commit
    watch.seqs.append(seq)
    return seq


def _fire(watch: _Watch, confirmed: bool) -> None:
    seqs, watch.seqs = watch.seqs, []
    if seqs:
        watch.on_commit(seqs, confirmed)


def _check_database(target: Any, location: StoreLocation) -> None:
    """ConfigError naming OUTBOX_URL when ``target`` is bound to another database."""
    bind = target.get_bind() if hasattr(target, "get_bind") else target
    url = getattr(getattr(bind, "engine", bind), "url", None)
    if url is None:
        return
    if not str(url.drivername).startswith("postgres"):
        raise ConfigError(f"transaction= is on a {url.drivername} database; OUTBOX_URL is {location.shown} "
                          "(the message row must be written where the outbox is).")
    # The port and database name: a host may be written two ways (localhost, 127.0.0.1).
    ours = location.shown.split("://", 1)[1].split(":", 1)[1]
    theirs = f"{url.port or 5432}/{url.database or url.username or ''}"
    if ours != theirs:
        raise ConfigError(f"transaction= is on the database {url.host}:{theirs}; OUTBOX_URL is {location.shown} "
                          "(the message row must be written where the outbox is).")
