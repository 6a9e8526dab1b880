"""Message accounting for the fault scenarios: numbered messages in, a server-side
record out, and every message placed in a column.

Messages are numbered by the producer: ``"n:<int>"`` text with acknowledgements off,
a JSON object ``{"n": <int>, ...}`` (which the client stamps with an id) with them on.
The server's record is the list of message texts it received, in arrival order,
duplicates included, across its restarts.

What is checked, rather than computed as a remainder:

- **first arrivals in order**: the record deduplicated by number keeping each number's
  first arrival must be increasing (``out_of_order`` counts first arrivals below an
  earlier one);
- **nothing invented**: every number the server got was accepted by the client
  (``phantom``);
- **spilled**: messages a stopped client kept in its outbox file (OUTBOX_PATH) instead of
  dropping them, delivered by the client that took them over: a column of their own, never
  counted as dropped or queued;
- **where losses and duplicates may be**: with an abrupt fault, a message can be lost
  (acknowledgements off) or arrive twice only if it was accepted inside a *fault window*:
  from ``LEAD`` before the fault was injected (what the kernels and the proxy held,
  written but not yet read by the server application) to ``TRAIL`` after the client
  saw the connection go (on_close/on_error). ``window`` is the number of accepted
  messages in those windows: the stated bound on what a row may lose, and
  ``lost_outside``/``dup_outside`` count the lost and duplicated messages outside them
  (always 0). With acknowledgements on, ``lost`` itself must be 0.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import asdict, dataclass, field

from ..support import t

NUMBERED = re.compile(r"^n:(\d+)$")
JSON_NUMBERED = re.compile(r'^\{"n":(\d+)[,}]')  # the client's compact JSON, the fast path

#: A fault window starts this long before the fault is injected: at ~2,000 messages a second
#: and a server reading as they come, what was written and not yet read by the server's
#: application when the fault hit was written within it.
LEAD = 0.3
#: ... and ends this long after the client saw the connection go.
TRAIL = 0.1

#: Rows collected during the run; conftest prints them as tables at the end.
RESULTS: list["Accounting"] = []


@dataclass
class Accounting:
    scenario: str
    offered: int = 0  # send_message calls
    accepted: int = 0  # send_message returned True
    delivered: int = 0  # distinct accepted numbers in the server's record
    dropped: dict = field(default_factory=dict)  # counted by the client, by reason ("unacked" too; not "stopped")
    refused: int = 0  # QueueFull raised in the caller (the "raise" strategy)
    queued: int = 0  # still queued when the scenario ended (counted as "stopped" drops by stop())
    lost: int = 0  # accepted, not delivered, not counted by the client
    duplicated: int = 0  # arrivals of a number already received
    out_of_order: int = 0  # first arrivals below an earlier first arrival
    reconnects: int = 0
    note: str = ""
    acks: bool = False  # acknowledgements on (ACK_TIMEOUT set)
    resent: int = 0  # status()["messages_resent"] (acknowledgements on)
    window: int = 0  # accepted messages inside fault windows: the bound on lost (and duplicated)
    lost_outside: int = 0  # lost messages accepted outside every fault window
    dup_outside: int = 0  # duplicated messages accepted outside every fault window
    late_outside: int = 0  # out-of-order first arrivals accepted outside every fault window
    dropped_delivered: int = 0  # counted as dropped (or queued) by the client, yet delivered
    phantom: int = 0  # delivered numbers the client never accepted
    spilled: int = 0  # kept in the outbox file by stop() (status messages_spilled), sent by a successor

    def row(self) -> dict:
        return asdict(self)


def number_of(text) -> int | None:
    """The producer's number in a message text (``n:<int>`` or JSON ``{"n": <int>, ...}``)."""
    if not isinstance(text, str):
        return None
    if text.startswith("{"):
        match = JSON_NUMBERED.match(text)
        if match:
            return int(match.group(1))
        try:
            value = json.loads(text)
        except ValueError:
            return None
        n = value.get("n") if isinstance(value, dict) else None
        return n if isinstance(n, int) else None
    match = NUMBERED.match(text)
    return int(match.group(1)) if match else None


def numbers_in(texts) -> list[int]:
    return [n for n in map(number_of, texts) if n is not None]


def first_arrivals(record: list[int]) -> list[int]:
    """The record deduplicated by number, each number at its first arrival."""
    seen: set[int] = set()
    out = []
    for number in record:
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


class Windows:
    """Fault windows as intervals of accept time; which accepted numbers fall inside."""

    def __init__(self, spans: list[tuple[float, float]], accepted: list[int], accepted_at: list[float]) -> None:
        self.spans = [(start - t(LEAD), end + t(TRAIL)) for start, end in spans]
        self._at = dict(zip(accepted, accepted_at))
        self._times = accepted_at  # increasing: appended as messages are accepted

    def contains(self, number: int) -> bool:
        at = self._at.get(number)
        return at is not None and any(lo <= at <= hi for lo, hi in self.spans)

    def count(self) -> int:
        """Accepted messages inside any window (overlapping windows counted once)."""
        total, covered_to = 0, float("-inf")
        for lo, hi in sorted(self.spans):
            lo = max(lo, covered_to)
            if hi > lo:
                total += bisect.bisect_right(self._times, hi) - bisect.bisect_left(self._times, lo)
                covered_to = hi
        return total


def account(scenario: str, offered: int, accepted: list[int], delivered_record: list[int],
            drops: list[tuple[int, str]], refused: int, reconnects: int, note: str = "", *,
            acks: bool = False, resent: int = 0, windows: Windows | None = None, spilled: int = 0) -> Accounting:
    """``drops``: (number, reason) from on_drop; reason "stopped" means still queued at the end."""
    windows = windows or Windows([], [], [])
    accepted_set = set(accepted)
    firsts = first_arrivals(delivered_record)
    seen = set(firsts)
    duplicated_numbers = []
    counts: dict[int, int] = {}
    for number in delivered_record:
        counts[number] = counts.get(number, 0) + 1
        if counts[number] == 2:
            duplicated_numbers.append(number)
    late, highest = [], -1
    for number in firsts:
        if number < highest:
            late.append(number)
        highest = max(highest, number)
    dropped: dict[str, int] = {}
    queued = 0
    dropped_numbers = set()
    for number, reason in drops:
        dropped_numbers.add(number)
        if reason == "stopped":
            queued += 1
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    delivered = accepted_set & seen
    lost_numbers = accepted_set - delivered - dropped_numbers
    return Accounting(
        scenario, offered, len(accepted_set), len(delivered), dropped, refused, queued, len(lost_numbers),
        len(delivered_record) - len(seen), len(late), reconnects, note,
        acks=acks, resent=resent, window=windows.count(),
        lost_outside=sum(not windows.contains(n) for n in lost_numbers),
        dup_outside=sum(not windows.contains(n) for n in duplicated_numbers),
        late_outside=sum(not windows.contains(n) for n in late),
        dropped_delivered=len(dropped_numbers & seen), phantom=len(seen - accepted_set), spilled=spilled)


def format_table(rows: list[Accounting]) -> str:
    """One table per setting: acknowledgements off, then on."""
    headers = ["scenario", "offered", "accepted", "delivered", "dropped", "refused", "queued at end", "spilled",
               "lost uncounted", "in fault windows", "dup", "resent", "out of order", "reconnects",
               "dropped yet delivered"]
    out = []
    for acks, title in ((False, "acknowledgements off"), (True, "acknowledgements on (ACK_TIMEOUT set)")):
        body = []
        for r in rows:
            if r.acks != acks:
                continue
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(r.dropped.items())) or "0"
            body.append([r.scenario, r.offered, r.accepted, r.delivered, dropped, r.refused, r.queued, r.spilled, r.lost,
                         r.window, r.duplicated, r.resent if acks else "-", r.out_of_order, r.reconnects,
                         r.dropped_delivered])
        if not body:
            continue
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
        line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out += [title + ":", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body), ""]
    return "\n".join(out).rstrip()
