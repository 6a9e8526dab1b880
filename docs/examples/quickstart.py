from gevent import monkey; monkey.patch_all()   # first thing in the process, as usual with gevent
import json
from hermes_gevent import WebSocketClient


def load_checkpoint():                    # yours: e.g. a date the server uses to replay what you missed
    return None


def notify(text):                         # yours
    print("notification:", text)


class MyClient(WebSocketClient):
    MAX_QUEUE_SIZE = 5000

    def url(self):
        return "wss://messages.example.com/websocket"

    def identifier(self):
        return "billing-service"

    def last_connected_at(self):
        return load_checkpoint()

    def handle_message(self, msg):        # str for text frames, bytes for binary frames
        data = json.loads(msg)
        if data.get("operation") == "notification":
            notify(data["message"])


def main():
    client = MyClient.instance()          # one instance per class per process
    client.start()                        # returns at once; idempotent
    client.wait_until_connected(10)       # a script that stops soon waits: stop() flushes only while connected
    client.send_message({"receiver_id": "server", "data": {"operation": "ping"}})
    print(client.status())
    return client.stop()                  # flush, close with 1000, return how many were left undelivered


if __name__ == "__main__":
    main()
