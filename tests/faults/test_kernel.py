"""Kernel-level faults in a private network namespace (root, unshare, nftables), each
with acknowledgements off and on (netns_scenarios.py). Both must lose nothing on plain
ws:// (off: the TIOCOUTQ resend; on: the acknowledgement window).

Skipped, with the reason, where the machine does not allow it."""

import os
import shutil
import subprocess
import sys

import pytest

from ..support import last_json_line, run_script, t
from .accounting import RESULTS, Accounting

pytestmark = pytest.mark.faults


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare -n and nftables"
    for tool in ("unshare", "nft", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install util-linux nftables iproute2)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.decode().strip()}"
    return None


REASON = _why_not()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_kernel_faults_in_a_network_namespace():
    out, _ = run_script(["unshare", "-n", sys.executable, "-m", "tests.faults.netns_scenarios"], t(90))
    rows = {(row["scenario"], row["acks"]): row for row in last_json_line(out)}
    for row in rows.values():
        fields = {k: v for k, v in row.items() if k != "errors"}
        RESULTS.append(Accounting(**{**fields, "note": ", ".join(row["errors"])}))
    for row in rows.values():
        # first arrivals in order, nothing the client did not accept, and whatever arrived
        # twice was accepted inside the fault's window
        assert row["out_of_order"] == 0 and row["phantom"] == 0, row
        assert row["lost_outside"] == 0 and row["dup_outside"] == 0, row
    for acks in (False, True):
        # A real half-open connection: with acknowledgements off, what the server's TCP never
        # acknowledged is sent again (TIOCOUTQ), so nothing is lost; with them on, whatever the
        # server did not acknowledge. The rules also eat the server's ACKs (and acknowledgements),
        # so data that did arrive just before them can arrive twice: at-least-once, never lost.
        half_open = rows[("kernel: nft drop (real half-open)", acks)]
        assert "PingTimeout" in half_open["errors"] and half_open["reconnects"] == 1, half_open
        assert half_open["lost"] == 0 and half_open["delivered"] == half_open["accepted"], half_open
        reset = rows[("kernel: nft reject with tcp reset", acks)]
        assert reset["reconnects"] == 1 and reset["delivered"] > 0 and reset["lost"] == 0, reset
        if acks:
            for row in (half_open, reset):
                assert row["resent"] >= row["duplicated"] and not row["dropped"] and not row["queued"], row
    dns = rows[("DNS name does not resolve (3 attempts)", False)]
    assert dns["errors"] == ["gaierror"] and dns["queued"] == 100 and dns["lost"] == 0
