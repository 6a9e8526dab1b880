"""Drive hermes_gevent's client through a running Autobahn|Testsuite fuzzing server.

Starts nothing itself: a ``wstest -m fuzzingserver`` must already listen (see README.md beside
this file; tests/test_autobahn.py starts one and uses the functions below). For each case it
opens one ``WebSocketClient`` on ``/runCase?casetuple=<id>&agent=<agent>``, echoes every message
back (text as text, binary as binary), and stops the client once the server closed the
connection (or at the per-case timeout). Then ``/updateReports?agent=<agent>`` makes the server
write its report, and the behaviors are read from ``<reports>/index.json`` (the spec's
``outdir``), the result texts from each case's own report file.

Cases 12.* and 13.* (permessage-deflate) run with ``compression="deflate"``; those whose
subcategory says that the server's accept asks first for no context takeover (13.2, 13.5, 13.6,
13.7) also with ``compression_no_context_takeover=True``, so that the offer has
``client_no_context_takeover`` and says what that accept asks for. (autobahn 0.10.9 would
agree without it: its offer parser takes ``client_no_context_takeover`` as accepted when
absent, as RFC 7692 7.1.1.1 lets a server answer with it anyway; the client honours it either
way.) The subcategory comes in ``/getCaseInfo``'s ``category``, which tests/autobahn/wstest.py
adds.

    .venv/bin/python tests/autobahn/run_client.py                    # every case the server has
    .venv/bin/python tests/autobahn/run_client.py 1.* 2.* 5.1        # ids, or patterns
    .venv/bin/python tests/autobahn/run_client.py --exclude '12.*' --exclude '13.*'

Writes a JSON summary (``--summary``, default ``<reports>/summary-<agent>.json``) and prints
the count of each behavior and every case judged bad (``bad_cases``: anything but OK, except
the cases that are INFORMATIONAL by design). Exit status 0 when no case is bad, 1 otherwise.
"""
import argparse
import fnmatch
import json
import os
import re
import sys
import time

import gevent
import gevent.event

from hermes_gevent import ConfigError, WebSocketClient

DEFAULT_SERVER = "ws://127.0.0.1:9001"
#: Informational by design: 7.1.6 is a large message followed by a close and a ping; 7.13.1 and
#: 7.13.2 are close codes 5000 and 65535. Every other case must be OK.
INFORMATIONAL_BY_DESIGN = frozenset({"7.1.6", "7.13.1", "7.13.2"})
#: A case the client could not even be built for (never reached the server).
CLIENT_ERROR = "CLIENT-ERROR"
#: A case that was run but that the server's index lacks.
MISSING = "MISSING"

_ACCEPT = re.compile(r"server accept \(requestNoContextTakeover, requestMaxWindowBits\): \[\((True|False)\b")


def sort_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def one_connection(url, timeout, echo=True, **options):
    """Connect once, echo (or collect) messages until the server closes; returns what came in
    (``received``: the messages when ``echo`` is false, ``messages``: how many).

    ``options`` go to the client (compression...). A client that cannot be built with them
    (TypeError, ConfigError) is returned as ``client_error``, with nothing sent."""
    closed = gevent.event.Event()
    received = []
    holder = {}

    def on_message(msg):
        if echo:  # a case: count, and echo (keeping 1000 messages of 128 KiB would cost memory)
            holder["count"] = holder.get("count", 0) + 1
            holder["client"].send_message(msg)
        else:  # a command's answer
            received.append(msg)

    def on_close(code, reason):
        holder["close"] = (code, reason)
        closed.set()

    def on_error(exc):
        holder.setdefault("error", repr(exc))
        closed.set()

    started = time.monotonic()
    try:
        client = WebSocketClient(
            url=url,
            identifier="autobahn",
            on_message=on_message,
            on_close=on_close,
            on_error=on_error,
            on_give_up=lambda exc: closed.set(),
            retry_limit=1,          # one attempt per case: a second connection would rerun the case
            retry_delay=3600,       # never reached: the client is stopped once the connection ends
            max_retry_delay=3600,
            retry_jitter=0,
            proxy=False,
            max_queue_size=100000,
            queue_overflow_strategy="raise",
            **options,
        )
    except (TypeError, ConfigError) as exc:
        return {"received": [], "messages": 0, "close": None, "error": None, "timed_out": False, "seconds": 0.0,
                "client_error": f"{type(exc).__name__}: {exc}"}
    holder["client"] = client
    client.start()
    finished = closed.wait(timeout)
    client.stop(timeout=2)
    return {
        "received": received,
        "messages": holder.get("count", len(received)),
        "close": holder.get("close"),
        "error": holder.get("error"),
        "timed_out": not finished,
        "seconds": round(time.monotonic() - started, 3),
        "client_error": None,
    }


def ask(base, path, timeout=30):
    """The first message of a server command (``/getCaseCount``, ``/getCaseInfo?case=N``), as JSON."""
    answer = one_connection(f"{base}{path}", timeout, echo=False)
    if not answer["received"]:
        raise RuntimeError(f"no answer from {base}{path}: {answer}")
    return json.loads(answer["received"][0])


def list_cases(base):
    """Every case the server has, in its order: dicts with id, description and category (None
    from a wstest without tests/autobahn/wstest.py's change)."""
    count = int(ask(base, "/getCaseCount"))
    cases = []
    for i in range(1, count + 1):
        info = ask(base, f"/getCaseInfo?case={i}")
        cases.append({"id": info["id"], "description": info.get("description"), "category": info.get("category")})
    return cases


def select(cases, patterns=(), exclude=()):
    """The cases whose id matches a pattern (an id or a glob: 1.1.*, 5.*) and no exclude pattern."""
    def matches(case_id, pats):
        return any(case_id == p or fnmatch.fnmatchcase(case_id, p) for p in pats)
    patterns = list(patterns) or ["*"]
    return [c for c in cases if matches(c["id"], patterns) and not matches(c["id"], exclude)]


def no_context_takeover_first(category):
    """Whether a 13.x subcategory's server accept asks first for no context takeover, e.g.
    "... / server accept (requestNoContextTakeover, requestMaxWindowBits): [(True, 9), ...]"."""
    found = _ACCEPT.search(category or "")
    return bool(found) and found.group(1) == "True"


def client_options(case):
    """The client keywords a case needs beyond the defaults."""
    if case["id"].split(".")[0] not in ("12", "13"):
        return {}
    options = {"compression": "deflate"}
    if no_context_takeover_first(case.get("category")):
        # The library's setting: the offer adds client_no_context_takeover, and the
        # compressor starts afresh for each message.
        options["compression_no_context_takeover"] = True
    return options


def run_case(base, agent, case, timeout):
    """Run one case; what the client saw (the server's verdict comes with the report)."""
    options = client_options(case)
    r = one_connection(f"{base}/runCase?casetuple={case['id']}&agent={agent}", timeout, **options)
    return {"close": r["close"], "error": r["error"], "timed_out": r["timed_out"], "seconds": r["seconds"],
            "messages": r["messages"], "client_error": r["client_error"], "options": options}


def update_reports(base, agent, timeout=600):
    one_connection(f"{base}/updateReports?agent={agent}", timeout, echo=False)


def read_results(reports, agent, case_ids, runs=None):
    """case id -> the server's verdict: behavior, behaviorClose, result, resultClose,
    remoteCloseCode, duration (ms) and report (the case's JSON report file). A case missing from
    the index is MISSING, or CLIENT-ERROR when ``runs`` says its client was never built."""
    with open(os.path.join(reports, "index.json")) as f:
        index = json.load(f).get(agent, {})
    results = {}
    for case_id in case_ids:
        run = (runs or {}).get(case_id) or {}
        entry = index.get(case_id)
        if entry is None:
            client_error = run.get("client_error")
            results[case_id] = {"behavior": CLIENT_ERROR if client_error else MISSING, "behaviorClose": None,
                                "result": client_error or "not in the server's index.json", "resultClose": None,
                                "remoteCloseCode": None, "duration": None, "report": None}
            continue
        report = os.path.join(reports, entry["reportfile"])
        try:
            with open(report) as f:
                detail = json.load(f)
        except (OSError, ValueError) as exc:
            detail = {"result": f"(report unreadable: {exc})"}
        results[case_id] = {"behavior": entry.get("behavior"), "behaviorClose": entry.get("behaviorClose"),
                            "result": detail.get("result"), "resultClose": detail.get("resultClose"),
                            "remoteCloseCode": entry.get("remoteCloseCode"), "duration": entry.get("duration"),
                            "report": report}
    return results


def allowed(case_id):
    """The behaviors (and close behaviors) a case may have."""
    return {"OK", "INFORMATIONAL"} if case_id in INFORMATIONAL_BY_DESIGN else {"OK"}


def bad_cases(results, runs=None):
    """The cases whose behavior or behaviorClose is not allowed (NON-STRICT is bad), or whose
    client timed out, in id order, each with what the report says."""
    bad = []
    for case_id in sorted(results, key=sort_key):
        res = results[case_id]
        run = (runs or {}).get(case_id) or {}
        ok = allowed(case_id)
        if res["behavior"] in ok and res["behaviorClose"] in ok and not run.get("timed_out"):
            continue
        bad.append(dict(res, case=case_id, timed_out=bool(run.get("timed_out")), options=run.get("options")))
    return bad


def describe(item):
    """One line (or two) for a bad case."""
    line = f"{item['case']:9} {item['behavior']:14} close {item['behaviorClose']}: {item['result']}"
    if item["behaviorClose"] not in ("OK", None) and item.get("resultClose"):
        line += f" | close: {item['resultClose']}"
    if item.get("timed_out"):
        line += " | the client timed out"
    if item.get("options"):
        line += f" | client options {item['options']}"
    return line


def run(base, agent, cases, timeout, reports, progress=None):
    """Run ``cases`` (from list_cases/select) one after the other, then have the report written
    and read it. Returns {"runs", "results", "bad", "seconds"}."""
    runs = {}
    started = time.monotonic()
    for case in cases:
        r = run_case(base, agent, case, timeout)
        runs[case["id"]] = r
        if progress:
            note = " TIMEOUT" if r["timed_out"] else ""
            note += f" {r['client_error']}" if r["client_error"] else ""
            progress(f"  {case['id']:10} {r['seconds']:8.2f}s close={r['close']}{note}")
    seconds = time.monotonic() - started
    update_reports(base, agent)
    ids = [c["id"] for c in cases]
    results = read_results(reports, agent, ids, runs)
    return {"runs": runs, "results": results, "bad": bad_cases(results, runs), "seconds": round(seconds, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="case ids or patterns (1.1.1, 5.*, 9.1.*); default: all")
    ap.add_argument("--server", default=DEFAULT_SERVER)
    ap.add_argument("--agent", default="hermes")
    ap.add_argument("--exclude", action="append", default=[], help="pattern to leave out (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case (default 120)")
    ap.add_argument("--reports", default=None,
                    help="the spec's outdir (holds index.json); default reports/clients")
    ap.add_argument("--summary", default=None, help="where to write the JSON summary")
    args = ap.parse_args(argv)

    base = args.server.rstrip("/")
    try:
        every = list_cases(base)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    wanted = select(every, args.cases, args.exclude)
    print(f"{len(every)} cases on the server, running {len(wanted)}", flush=True)
    reports = args.reports or os.path.join("reports", "clients")
    outcome = run(base, args.agent, wanted, args.timeout, reports, progress=lambda s: print(s, flush=True))

    counts = {}
    for res in outcome["results"].values():
        counts[res["behavior"]] = counts.get(res["behavior"], 0) + 1
    summary = {"agent": args.agent, "server": base, "cases_run": len(wanted), "seconds": outcome["seconds"],
               "counts": counts, "bad": outcome["bad"], "runs": outcome["runs"],
               "results": outcome["results"]}
    out = args.summary or os.path.join(reports, f"summary-{args.agent}.json")
    with open(out, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)

    print(f"\n{len(wanted)} cases in {outcome['seconds']:.0f}s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for item in outcome["bad"]:
        print("  " + describe(item))
    print(f"summary: {out}")
    return 1 if outcome["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
