from hermes_gevent import WebSocketClient

client = WebSocketClient(url="ws://127.0.0.1:9/")   # never started: nothing connects
status = client.status()

assert status["state"] == "idle" and status["connected"] is False
assert status["queue_size"] == 0 and status["alerts"] == []
healthy = status["connected"] and not status["alerts"]   # what a probe checks
assert healthy is False
