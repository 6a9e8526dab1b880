"""Message accounting for the fault scenarios: numbered messages in, a server-side
record out, and every message placed in exactly one column."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

NUMBERED = re.compile(r"^n:(\d+)$")

#: Rows collected during the run; conftest prints them as one table at the end.
RESULTS: list["Accounting"] = []


@dataclass
class Accounting:
    scenario: str
    offered: int = 0  # send_message calls
    accepted: int = 0  # send_message returned True
    delivered: int = 0  # distinct accepted numbers in the server's record
    dropped: dict = field(default_factory=dict)  # counted by the client, by reason, including refused-at-send
    refused: int = 0  # QueueFull raised in the caller (the "raise" strategy)
    queued: int = 0  # still queued when the scenario ended (counted as "stopped" drops by stop())
    lost: int = 0  # accepted, not delivered, not counted by the client
    duplicated: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    note: str = ""

    def row(self) -> dict:
        return asdict(self)


def numbers_in(texts) -> list[int]:
    out = []
    for text in texts:
        match = NUMBERED.match(text)
        if match:
            out.append(int(match.group(1)))
    return out


def account(scenario: str, offered: int, accepted: list[int], delivered_record: list[int],
            drops: list[tuple[int, str]], refused: int, reconnects: int, note: str = "") -> Accounting:
    """``drops``: (number, reason) from on_drop; reason "stopped" means still queued at the end.
    Every offered message lands in one column: offered = delivered + dropped + refused + queued + lost."""
    accepted_set = set(accepted)
    seen: set[int] = set()
    duplicated = out_of_order = 0
    highest = -1
    for number in delivered_record:
        if number in seen:
            duplicated += 1
            continue
        seen.add(number)
        if number < highest:
            out_of_order += 1
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
    lost = len(accepted_set - delivered - dropped_numbers)
    return Accounting(scenario, offered, len(accepted_set), len(delivered), dropped, refused, queued, lost,
                      duplicated, out_of_order, reconnects, note)


def format_table(rows: list[Accounting]) -> str:
    headers = ["scenario", "offered", "accepted", "delivered", "dropped", "refused", "queued at end",
               "lost uncounted", "dup", "out of order", "reconnects"]
    body = []
    for r in rows:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(r.dropped.items())) or "0"
        body.append([r.scenario, r.offered, r.accepted, r.delivered, dropped, r.refused, r.queued, r.lost,
                     r.duplicated, r.out_of_order, r.reconnects])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
