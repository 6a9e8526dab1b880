"""Singleton per class, and a forked child that holds nothing of its parent's client."""

import json
import sys


from hermes_gevent import WebSocketClient

from .support import TESTS, run_script, t


def test_instance_is_one_per_class():
    class A(WebSocketClient):
        pass

    class B(WebSocketClient):
        pass

    try:
        assert A.instance(url="ws://127.0.0.1:1/") is A.instance()
        assert B.instance(url="ws://127.0.0.1:1/") is not A.instance()
    finally:
        A.reset_instance()
        B.reset_instance()


def test_forked_child_starts_fresh_and_nothing_is_sent_twice(server):
    out, _ = run_script([sys.executable, str(TESTS / "scripts" / "fork_child.py"), server.url], t(40))
    reports = {r["who"]: r for r in map(json.loads, out.splitlines())}
    assert reports["child"]["held"] == {
        "same_instance": True, "connected": False, "started": False, "queue_size": 0,
        "state": "pending", "messages_sent": 0,
    }
    assert reports["child"]["ok"] and reports["parent"]["ok"] and reports["parent"]["child_exit"] == 0
    server.wait_for(lambda: len(server.of("close")) == 2, t(10), "both connections closed")
    texts = server.texts()
    expected = [f"parent-before-{i}" for i in range(5)] + ["child-0", "parent-after"]
    assert sorted(texts) == sorted(expected)  # each exactly once: the child did not resend the parent's
    assert len(server.of("connect")) == 2
    assert [e["code"] for e in server.of("close")] == [1000, 1000]
