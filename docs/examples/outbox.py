from hermes_gevent import WebSocketClient


class FileOutboxClient(WebSocketClient):
    OUTBOX_PATH = "/var/lib/myapp/hermes-outbox.db"   # or outbox_path=..., or Flask HERMES_OUTBOX_PATH
    OUTBOX_SYNC = "stop"                              # the default; or "always"


class PostgresOutboxClient(WebSocketClient):
    OUTBOX_URL = "postgresql://app:secret@db:5432/app"   # or the app's SQLALCHEMY_DATABASE_URI as it is
    OUTBOX_SYNC = "always"                               # or "stop", as with the file
