"""Kernel-level faults, run by test_kernel.py inside a private network namespace
(``unshare -n``, as root): only a loopback interface exists, so nftables rules
touch nothing but this test, and a DNS lookup cannot leave the machine.

    unshare -n python -m tests.faults.netns_scenarios

Each kernel fault runs with acknowledgements off and on. Prints one JSON line: the
accounting rows.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import subprocess  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

from ..support import ServerProcess, free_port, t, wait_until  # noqa: E402
from .scenario import Run  # noqa: E402

TABLE = "hermes_faults"
FAST = dict(retry_delay=0.05, max_retry_delay=0.2, max_queue_size=100_000, connect_timeout=t(0.5),
            ping_interval=t(0.2), ping_timeout=t(0.4), retry_jitter=0)


def nft(*commands: str) -> None:
    for command in commands:
        subprocess.run(["nft", *command.split()], check=True)


def block(port: int, verdict: str) -> None:
    nft(f"add table inet {TABLE}",
        f"add chain inet {TABLE} out {{ type filter hook output priority 0 ; }}",
        f"add rule inet {TABLE} out tcp dport {port} {verdict}",
        f"add rule inet {TABLE} out tcp sport {port} {verdict}")


def unblock() -> None:
    nft(f"delete table inet {TABLE}")


def kernel_fault(server: ServerProcess, verdict: str, name: str, expect_error: str, acks: bool) -> dict:
    errors = []
    run = Run(WebSocketClient, server.url, acks=acks, on_error=errors.append, **FAST).start_producer()
    run.produce_for(0.4)
    run.fault()
    block(server.port, verdict)
    # Whichever part meets the fault first reports it: the reader (ConnectionClosed), the sender
    # (WriteFailed, a ConnectionClosed) or, when only a ping was in flight as the reset came, the
    # liveness check (PingTimeout): match the class or any of its bases.
    expected = set(expect_error.split("|"))
    wait_until(lambda: any(expected & {c.__name__ for c in type(e).__mro__} for e in errors), t(5), expect_error)
    run.produce_for(0.3)  # the client keeps trying while the rule holds
    unblock()
    run.produce_for(0.5)
    result = run.finish(server, name)
    return {**result.row(), "errors": sorted({type(e).__name__ for e in errors})}


def unresolvable_name(port: int) -> dict:
    errors = []
    run = Run(WebSocketClient, f"ws://hermes-test.invalid:{port}/ws", on_error=errors.append, retry_limit=3, **FAST)
    run.send(100)
    wait_until(lambda: run.client.status()["max_retries_reached"], t(10), "give up after 3 lookups")
    result = run.finish(None, "DNS name does not resolve (3 attempts)", delivered_expected=False)
    return {**result.row(), "errors": sorted({type(e).__name__ for e in errors})}


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rows = []
    for acks in (False, True):
        for verdict, name, error in [
            ("drop", "kernel: nft drop (real half-open)", "PingTimeout"),
            ("reject with tcp reset", "kernel: nft reject with tcp reset", "ConnectionClosed|PingTimeout"),
        ]:
            # a fresh record per scenario; with acknowledgements on, a server that acknowledges
            server = ServerProcess(free_port(), *(["--ack"] if acks else [])).start()
            try:
                rows.append(kernel_fault(server, verdict, name, error, acks))
            finally:
                server.stop()
    rows.append(unresolvable_name(free_port()))
    print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
