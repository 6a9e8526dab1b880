"""The health loop: alerts in status() and the log, once per change; dead loops restarted."""

import gevent

from .conftest import t, wait_until


def alert_names(client):
    return {a["name"] for a in client.status()["alerts"]}


def test_queue_and_retry_alerts_appear_once_and_clear(server, proxy_to, make_client, caplog_hermes):
    proxy = proxy_to(server.port)
    proxy.refuse()
    client = make_client(url=proxy.url, health_check_interval=t(0.1), max_queue_size=10, retry_limit=10,
                         retry_delay=t(0.02), max_retry_delay=t(0.02))
    client.start()
    for i in range(10):
        client.send_message(f"m-{i}")
    wait_until(lambda: alert_names(client) == {"queue_high", "retries_high"}, t(5), "both alerts")
    gevent.sleep(t(0.5))  # several more ticks while nothing changes
    lines = [r.getMessage() for r in caplog_hermes.records if r.getMessage().startswith("ALERT")]
    assert sum("queue_high" in line for line in lines) == 1
    assert sum("retries_high" in line for line in lines) == 1
    proxy.reopen()
    client.reconnect()  # it may have given up meanwhile (10 failures): leave that state
    wait_until(lambda: alert_names(client) == set(), t(5), "alerts to clear")
    assert any("alert cleared: queue_high" in r.getMessage() for r in caplog_hermes.records)


def test_silence_while_connected_raises_no_messages(server, make_client):
    client = make_client(url=server.url, health_check_interval=t(0.2))
    client.start()
    assert client.wait_until_connected(t(5))
    wait_until(lambda: "no_messages" in alert_names(client), t(3), "the silence alert")

    def messages_flow_and_alert_cleared():
        # One message is not enough: a check that runs just over an interval after it sees
        # silence again. A server that talks keeps talking, so push until the alert clears.
        server.command(cmd="push", n=1)
        return "no_messages" not in alert_names(client)

    wait_until(messages_flow_and_alert_cleared, t(3), "the alert to clear while messages flow")


def test_a_loop_that_dies_is_logged_and_restarted(server, make_client, caplog_hermes):
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    sender = client.run.loops["sender"]
    sender.kill(RuntimeError("simulated crash"), block=True)
    assert client.status()["send_thread_alive"] is False
    wait_until(lambda: client.status()["send_thread_alive"] and client.connected, t(5), "the restart")
    assert any("the sender loop died" in r.getMessage() for r in caplog_hermes.records)
    client.send_message("after-restart")
    server.wait_for(lambda: "after-restart" in server.texts(), t(5), "a message through the new sender")
