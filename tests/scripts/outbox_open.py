"""Run by test_store.py: start a client on each OUTBOX_PATH given, as a user the file system
refuses - user nobody, or root without the capabilities that let root past file modes.

usage: outbox_open.py [--drop-dac] URL PATH...

--drop-dac: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, then run
this script again (exec): root then has no capability past file modes (an owner's bits apply
to it as to anyone). Prints {"skip": reason} when the kernel does not allow that.
Prints one JSON line: the euid, the effective capabilities, and per path the exception
start() raised (its type and text) or null when it started.
"""

import ctypes
import json
import os
import sys

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2

if sys.argv[1] == "--drop-dac":
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            print(json.dumps({"skip": f"prctl(PR_CAPBSET_DROP) failed: {os.strerror(ctypes.get_errno())}"}),
                  flush=True)
            sys.exit(0)
    os.execv(sys.executable, [sys.executable, __file__, *sys.argv[2:]])

from gevent import monkey  # noqa: E402

monkey.patch_all()

from hermes_gevent import WebSocketClient  # noqa: E402

url, paths = sys.argv[1], sys.argv[2:]
with open("/proc/self/status") as status:
    capabilities = next(line.split()[1] for line in status if line.startswith("CapEff:"))
report = {"euid": os.geteuid(), "cap_eff": capabilities, "results": {}}
for path in paths:
    client = WebSocketClient(url=url, outbox_path=path)
    try:
        client.start()
    except Exception as exc:  # what a deployment would see
        report["results"][path] = {"type": type(exc).__name__, "text": str(exc)}
    else:
        report["results"][path] = None
        client.stop(1)
print(json.dumps(report), flush=True)
