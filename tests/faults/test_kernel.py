"""Kernel-level faults in a private network namespace (root, unshare, nftables).

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
    rows = {row["scenario"]: row for row in last_json_line(out)}
    for row in rows.values():
        fields = {k: v for k, v in row.items() if k != "errors"}
        RESULTS.append(Accounting(**{**fields, "note": ", ".join(row["errors"])}))
    for row in rows.values():
        # every message lands in one column, and the first copies arrive in order
        assert row["offered"] == row["delivered"] + sum(row["dropped"].values()) + row["refused"] \
            + row["queued"] + row["lost"], row
        assert row["out_of_order"] == 0, row
    # A real half-open connection: what the server's TCP never acknowledged is sent again,
    # so nothing is lost. The rules also eat the server's ACKs, so data that did arrive just
    # before them can look unacknowledged and arrive twice: at-least-once, never lost.
    half_open = rows["kernel: nft drop (real half-open)"]
    assert "PingTimeout" in half_open["errors"] and half_open["reconnects"] == 1
    assert half_open["lost"] == 0, half_open
    reset = rows["kernel: nft reject with tcp reset"]
    assert reset["reconnects"] == 1 and reset["delivered"] > 0 and reset["lost"] == 0, reset
    dns = rows["DNS name does not resolve (3 attempts)"]
    assert dns["errors"] == ["gaierror"] and dns["queued"] == 100 and dns["lost"] == 0
