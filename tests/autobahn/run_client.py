"""Drive hermes_gevent's client through a running Autobahn|Testsuite fuzzing server.

Starts nothing itself: a ``wstest -m fuzzingserver`` must already listen (see README.md beside
this file). For each case it opens one ``WebSocketClient`` on
``/runCase?casetuple=<id>&agent=<agent>``, echoes every message back (text as text, binary as
binary), and stops the client once the server closed the connection (or at the per-case
timeout). Then ``/updateReports?agent=<agent>`` makes the server write its report, and the
behaviors are read from ``<reports>/index.json`` (the spec's ``outdir``).

    .venv/bin/python tests/autobahn/run_client.py                    # every case the server has
    .venv/bin/python tests/autobahn/run_client.py 1.* 2.* 5.1        # ids, or prefixes ending in *
    .venv/bin/python tests/autobahn/run_client.py --exclude '12.*' --exclude '13.*'

Writes a JSON summary (``--summary``, default ``<reports>/summary-<agent>.json``) and prints
the count of each behavior and the list of cases that were not OK. Exit status 0 when every
case run is OK, NON-STRICT or INFORMATIONAL, 1 otherwise.
"""
import argparse
import fnmatch
import json
import os
import sys
import time

import gevent
import gevent.event

from hermes_gevent import WebSocketClient

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def _sort_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def one_connection(url, timeout, echo=True):
    """Connect once, echo (or collect) messages until the server closes; returns what came in."""
    closed = gevent.event.Event()
    received = []
    holder = {}

    def on_message(msg):
        received.append(msg)
        if echo:
            holder["client"].send_message(msg)

    def on_close(code, reason):
        holder["close"] = (code, reason)
        closed.set()

    def on_error(exc):
        holder.setdefault("error", repr(exc))
        closed.set()

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
    )
    holder["client"] = client
    started = time.monotonic()
    client.start()
    finished = closed.wait(timeout)
    client.stop(timeout=2)
    return {
        "received": received,
        "close": holder.get("close"),
        "error": holder.get("error"),
        "timed_out": not finished,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="case ids or patterns (1.1.1, 5.*, 9.1.*); default: all")
    ap.add_argument("--server", default="ws://127.0.0.1:9001")
    ap.add_argument("--agent", default="hermes")
    ap.add_argument("--exclude", action="append", default=[], help="pattern to leave out (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case (default 120)")
    ap.add_argument("--reports", default=None,
                    help="the spec's outdir (holds index.json); default reports/clients")
    ap.add_argument("--summary", default=None, help="where to write the JSON summary")
    args = ap.parse_args(argv)

    base = args.server.rstrip("/")
    count = one_connection(f"{base}/getCaseCount", 30, echo=False)
    if not count["received"]:
        print(f"no case count from {base}: {count}", file=sys.stderr)
        return 2
    n = int(json.loads(count["received"][0]))
    all_ids = []
    for i in range(1, n + 1):
        info = one_connection(f"{base}/getCaseInfo?case={i}", 30, echo=False)
        all_ids.append(json.loads(info["received"][0])["id"])

    patterns = args.cases or ["*"]
    wanted = [c for c in all_ids
              if any(c == p or fnmatch.fnmatchcase(c, p) for p in patterns)
              and not any(c == p or fnmatch.fnmatchcase(c, p) for p in args.exclude)]
    print(f"{n} cases on the server, running {len(wanted)}", flush=True)

    runs = {}
    t0 = time.monotonic()
    for case_id in wanted:
        r = one_connection(f"{base}/runCase?casetuple={case_id}&agent={args.agent}", args.timeout)
        runs[case_id] = {k: r[k] for k in ("close", "error", "timed_out", "seconds")}
        runs[case_id]["messages"] = len(r["received"])
        note = " TIMEOUT" if r["timed_out"] else ""
        print(f"  {case_id:10} {r['seconds']:8.2f}s close={r['close']}{note}", flush=True)
    run_seconds = time.monotonic() - t0

    one_connection(f"{base}/updateReports?agent={args.agent}", 600, echo=False)

    reports = args.reports or os.path.join("reports", "clients")
    index_path = os.path.join(reports, "index.json")
    with open(index_path) as f:
        index = json.load(f)
    results = index.get(args.agent, {})
    counts = {}
    not_ok = []
    for case_id in sorted(wanted, key=_sort_key):
        res = results.get(case_id)
        behavior = res["behavior"] if res else "MISSING"
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior != "OK":
            not_ok.append({"case": case_id, "behavior": behavior,
                           "behaviorClose": res.get("behaviorClose") if res else None,
                           "remoteCloseCode": res.get("remoteCloseCode") if res else None,
                           "duration_ms": res.get("duration") if res else None,
                           "report": os.path.join(reports, res["reportfile"]) if res else None})

    summary = {
        "agent": args.agent,
        "server": base,
        "cases_run": len(wanted),
        "seconds": round(run_seconds, 1),
        "counts": counts,
        "not_ok": not_ok,
        "runs": runs,
    }
    out = args.summary or os.path.join(reports, f"summary-{args.agent}.json")
    with open(out, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)

    print(f"\n{len(wanted)} cases in {run_seconds:.0f}s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for item in not_ok:
        print(f"  {item['case']:10} {item['behavior']:14} close: {item['behaviorClose']}"
              f" (remote code {item['remoteCloseCode']})")
    print(f"summary: {out}")
    return 0 if set(counts) <= ACCEPTED else 1


if __name__ == "__main__":
    sys.exit(main())
