"""Run by test_pg_store.py in a fresh interpreter (psycopg not imported yet): start a client with
OUTBOX_URL from the hub, and note which OS thread imports psycopg - ~110 ms of CPU that, in the
hub, would keep every timer of the process waiting.

usage: pg_import_thread.py PG_URL WS_URL TIMEOUT   (TIMEOUT: seconds start() may take, already scaled)

Prints one JSON line: {"imported": whether psycopg was imported, "in_hub": whether that
happened in the hub's thread, "started": whether start() returned}.
"""

import json
import sys

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

get_ident = monkey.get_original("_thread", "get_ident")  # the OS thread's, not the greenlet's
HUB_THREAD = get_ident()  # the hub runs in the main thread
imported_in: list[int] = []


class NoteImport:
    """psycopg's spec, as the other finders find it, with a loader that notes the thread that runs
    the module (importlib.util.find_spec, which require() calls, finds it without running it)."""

    def find_spec(self, name, path=None, target=None):
        if name != "psycopg":
            return None
        others = (finder for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec"))
        spec = next((found for found in (f.find_spec(name, path, target) for f in others) if found), None)
        if spec is not None:
            exec_module = spec.loader.exec_module

            def noted(module):
                imported_in.append(get_ident())
                exec_module(module)

            spec.loader.exec_module = noted
        return spec


sys.meta_path.insert(0, NoteImport())

from hermes_gevent import WebSocketClient  # noqa: E402

assert "psycopg" not in sys.modules, "imported with hermes_gevent already"
pg_url, ws_url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = WebSocketClient(url=ws_url, outbox_url=pg_url, identifier="import-thread")
started = gevent.spawn(client.start)  # from a greenlet in the hub, as a Flask app's first request does
started.join(timeout)
try:
    print(json.dumps({"imported": bool(imported_in), "in_hub": bool(imported_in) and imported_in[0] == HUB_THREAD,
                      "started": started.successful()}), flush=True)
finally:
    client.stop(5)
