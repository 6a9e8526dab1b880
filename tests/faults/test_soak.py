"""The soak script, run short: no lost or repeated message, no leaked greenlet or file
descriptor across 200 reconnects, bounded memory. Run it by hand for a million messages."""

import json
import sys

import gevent.subprocess
import pytest

from ..support import TESTS, t

pytestmark = pytest.mark.faults


def test_soak_short():
    proc = gevent.subprocess.Popen(
        [sys.executable, "-m", "tests.soak", "--messages", "300000", "--reconnects", "200", "--fault-every", "0.2"],
        cwd=str(TESTS.parent), stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=t(120))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(t(5))
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    print(report)
    assert report["reconnects"] == 200
    assert report["greenlets_after_reconnects"] == report["greenlets_before"], report
    assert report["fds_after_reconnects"] == report["fds_before"], report
    assert report["delivered"] == report["messages"] and report["duplicates"] == 0, report
    assert report["out_of_order"] == 0 and report["faults"] >= 1, report
    assert report["rss_end_mb"] - report["rss_start_mb"] < 64, report
