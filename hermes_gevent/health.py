"""Health alerts computed from a status snapshot: pure, no clock, no I/O.

The client's health loop calls ``compute_alerts`` every HEALTH_CHECK_INTERVAL
and logs only the alerts that appeared or cleared since the last tick.
"""

from __future__ import annotations

from typing import Any, Mapping

from .settings import Settings

__all__ = ["alert_changes", "compute_alerts", "LOOP_STATUS_KEYS", "QUEUE_ALERT_RATIO", "RETRY_ALERT_RATIO",
    "WATCHED_LOOPS"]

QUEUE_ALERT_RATIO = 0.9
RETRY_ALERT_RATIO = 0.8
#: Each loop greenlet -> the status() key that says it is alive (names kept from the original client).
LOOP_STATUS_KEYS = {
    "reader": "event_thread_alive",
    "sender": "send_thread_alive",
    "health": "health_thread_alive",
    "supervisor": "supervisor_alive",
}
#: The loops whose death raises the loop_dead alert.
WATCHED_LOOPS = ("reader", "sender", "health")


def compute_alerts(status: Mapping[str, Any], settings: Settings, now: float) -> dict[str, str]:
    """Alert name -> sentence, for the status snapshot ``status`` at time ``now``.

    ``status`` carries the public status keys plus ``_last_activity``: the
    monotonic time of the last message received, or of connecting if none came.
    """
    alerts: dict[str, str] = {}
    if status.get("connected") and status.get("_last_activity") is not None:
        silent_for = now - status["_last_activity"]
        if silent_for > settings.HEALTH_CHECK_INTERVAL:
            alerts["no_messages"] = (
                f"connected but no message received for {silent_for:.0f}s "
                f"(HEALTH_CHECK_INTERVAL={settings.HEALTH_CHECK_INTERVAL:g}s)"
            )
    queue_size = status.get("queue_size", 0)
    if queue_size > settings.MAX_QUEUE_SIZE * QUEUE_ALERT_RATIO:
        alerts["queue_high"] = (
            f"send queue holds {queue_size} of MAX_QUEUE_SIZE={settings.MAX_QUEUE_SIZE} messages"
        )
    unacked = status.get("unacked", 0)
    if settings.ACK_TIMEOUT is not None and unacked >= settings.MAX_UNACKED * QUEUE_ALERT_RATIO:
        alerts["unacked_high"] = (
            f"{unacked} of MAX_UNACKED={settings.MAX_UNACKED} messages wait for an acknowledgement: "
            "is the server acknowledging ({\"ack\": id})? They are resent every ACK_TIMEOUT meanwhile"
        )
    limit = settings.DEFAULT_RETRY_LIMIT
    retries = status.get("retry_count", 0)
    if limit is not None and retries > limit * RETRY_ALERT_RATIO:
        alerts["retries_high"] = f"{retries} consecutive failed attempts of DEFAULT_RETRY_LIMIT={limit}"
    if status.get("outbox_available") is False:
        where = status.get("outbox_url") or status.get("outbox_path")
        alerts["outbox_unavailable"] = (
            f"the outbox {where} cannot be written ({status.get('outbox_errors', 0)} error(s)): messages wait in "
            "memory only until it answers again"
        )
    if status.get("started") and not status.get("stopping"):
        dead = [LOOP_STATUS_KEYS[loop] for loop in WATCHED_LOOPS if not status.get(LOOP_STATUS_KEYS[loop], True)]
        if dead:
            alerts["loop_dead"] = f"loop greenlet not running: {', '.join(dead)}"
    return alerts


def alert_changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(names that appeared, names that cleared) between two alert sets."""
    return [n for n in after if n not in before], [n for n in before if n not in after]
