import os

from hermes_gevent import WebSocketClient


class MyClient(WebSocketClient):
    def headers(self):
        return {**super().headers(), "X-Worker-Pid": str(os.getpid())}
