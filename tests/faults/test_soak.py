"""The soak script, run short: no lost or repeated message, no leaked greenlet or file
descriptor across 200 reconnects, bounded memory. Run it by hand for a million messages."""

import sys

import pytest

from ..support import last_json_line, run_script, t

pytestmark = pytest.mark.faults


def reconnected_without_leaks(out: str, reconnects: int) -> dict:
    """The soak's report, once its forced reconnects left no greenlet or descriptor behind."""
    report = last_json_line(out)
    print(report)
    assert report["reconnects"] == reconnects, report
    assert report["greenlets_after_reconnects"] == report["greenlets_before"], report
    assert report["fds_after_reconnects"] == report["fds_before"], report
    return report


def test_soak_short():
    out, _ = run_script([sys.executable, "-m", "tests.soak", "--messages", "300000", "--reconnects", "200",
                         "--fault-every", "0.2"], t(120))
    report = reconnected_without_leaks(out, 200)
    assert report["delivered"] == report["messages"] and report["duplicates"] == 0, report
    assert report["out_of_order"] == 0 and report["faults"] >= 1 and report["send_phase_reconnects"] >= 1, report
    assert report["rss_end_mb"] - report["rss_start_mb"] < 64, report


def test_soak_short_with_acknowledgements():
    """Acknowledgements on, the server alternating a close (1012) and an abort (it drops the
    TCP connection with what it had not read): nothing lost, duplicates counted, first arrivals
    in order across connections, no leak. By hand: ``--acks --count 1000000``."""
    out, _ = run_script([sys.executable, "-m", "tests.soak", "--acks", "--count", "60000", "--reconnects", "20",
                         "--fault-every", "0.1"], t(120))
    report = reconnected_without_leaks(out, 20)
    assert report["faults_by_kind"]["abort"] >= 1 and report["faults_by_kind"]["close"] >= 1, report
    assert report["send_phase_reconnects"] >= 2, report
    assert report["lost"] == 0 and report["delivered"] == report["messages"], report
    assert report["first_out_of_order"] == 0 and report["unacked"] == 0 and not report["client_drops"], report
    assert report["resent"] >= report["duplicates"], report  # every duplicate was a resend the client counted
    assert report["rss_end_mb"] - report["rss_start_mb"] < 64, report
