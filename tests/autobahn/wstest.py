# Python 2.7 (autobahntestsuite is 2.7 only): runs under the interpreter that install.sh builds.
"""wstest with three changes, for tests/test_autobahn.py and run_client.py.

    WSTEST_SITE=DEST/site DEST/python tests/autobahn/wstest.py -m fuzzingserver -s spec.json -u 0
    WSTEST_SITE=DEST/site DEST/python tests/autobahn/wstest.py --check    # imports, then exits

- ``site.addsitedir(WSTEST_SITE)``, not PYTHONPATH: zope.interface is a namespace package made
  by a .pth file, which only a site directory processes.
- ``twisted.internet.ssl`` is stubbed when pyOpenSSL is absent (it is not installed): ws:// only.
- Every ``listenWS`` binds to 127.0.0.1 (wstest binds to all interfaces).
- ``/getCaseInfo`` also answers ``category``: the description of the case's subcategory (for
  13.x it names the server's accept, which the case description does not), so that the driver
  knows which offer a 13.x case needs.
"""
import json
import os
import site
import sys
import types

site.addsitedir(os.environ['WSTEST_SITE'])

try:
    import twisted.internet.ssl
except ImportError:
    import twisted.internet
    _ssl = types.ModuleType('twisted.internet.ssl')
    sys.modules['twisted.internet.ssl'] = _ssl
    twisted.internet.ssl = _ssl

import autobahn.twisted.websocket as _abws  # noqa: E402

_listenWS = _abws.listenWS


def listenWS(factory, contextFactory=None, backlog=50, interface=None):
    return _listenWS(factory, contextFactory, backlog, interface or '127.0.0.1')


_abws.listenWS = listenWS

from autobahntestsuite import echo, fuzzing, testee  # noqa: E402
from autobahntestsuite.case import CaseSubCategories  # noqa: E402

for _m in (fuzzing, echo, testee):
    if hasattr(_m, 'listenWS'):
        _m.listenWS = listenWS

_onOpen = fuzzing.FuzzingProtocol.onOpen


def onOpen(self):
    if self.path == '/getCaseInfo' and not self.runCase:
        case_id = self.factory.CaseSet.caseClasstoId(self.Case)
        self.sendMessage(json.dumps({
            'id': case_id,
            'description': self.factory.CaseSet.caseClassToPrettyDescription(self.Case),
            'category': CaseSubCategories.get('.'.join(case_id.split('.')[:2])),
        }))
        self.sendClose()
        return
    _onOpen(self)


fuzzing.FuzzingProtocol.onOpen = onOpen

if __name__ == '__main__':
    if sys.argv[1:] == ['--check']:
        sys.exit(0)
    from autobahntestsuite.wstest import run
    sys.argv[0] = 'wstest'
    run()
