from flask import Flask, current_app

from hermes_gevent.flask import Hermes, gave_up

hermes = Hermes()                      # Hermes(app=None, client_class=WebSocketClient)
events = []                            # stands in for your database here


@hermes.on_message                     # runs inside an app context, so database extensions work
def store(message):
    events.append(message)             # e.g. db.session.add(Event(body=message)); db.session.commit()


@gave_up.connect                       # a blinker signal; the sender is the app
def page_someone(app, error):
    print(f"{app.name}: WebSocket client gave up: {error}")   # e.g. alerts.send(...)


def create_app(config=None):
    app = Flask(__name__)
    app.config["HERMES_WS_URL"] = "wss://messages.example.com/websocket"
    app.config.update(config or {})
    hermes.init_app(app)               # a second init_app on the same app raises RuntimeError

    @app.post("/orders")
    def create_order():
        current_app.hermes.send_message({"operation": "order_created", "id": 42})
        return "", 202

    return app
