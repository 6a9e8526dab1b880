from hermes_gevent import WebSocketClient

client = WebSocketClient(url="ws://127.0.0.1:8765/ws", identifier="worker-1",
                         on_message=print, max_queue_size=100, retry_limit=None)
