"""wss:// against a local TLS server whose certificate the test makes: verified by default."""

import json
import ssl
import sys

import gevent
import pytest
import trustme

from .conftest import ServerProcess, free_port, t, wait_until
from .support import TESTS, run_script


@pytest.fixture
def tls_server(tmp_path):
    servers = []

    def make(hostname: str, *server_args: str):
        """A started TLS server whose certificate names ``hostname`` (``server_args`` go to
        tests/wsserver.py, e.g. "--ack"), and the CA file that verifies it."""
        ca = trustme.CA()
        cert = ca.issue_cert(hostname)
        certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        ca.cert_pem.write_to_path(str(cafile))
        server = ServerProcess(free_port(), "--certfile", str(certfile), "--keyfile", str(keyfile), *server_args,
                               scheme="wss")
        servers.append(server.start())
        return server, str(cafile)

    yield make
    for server in servers:
        server.stop()


def test_connects_over_tls_when_given_the_ca(tls_server, make_client):
    server, cafile = tls_server("127.0.0.1")
    server.command(cmd="mode", echo=True)
    got = []
    client = make_client(url=server.url, ca_file=cafile, on_message=got.append)
    client.start()
    assert client.wait_until_connected(t(5))
    client.send_message("over tls")
    wait_until(lambda: got == ["over tls"], t(5), "the echo")


def test_an_ssl_context_is_accepted(tls_server, make_client):
    server, cafile = tls_server("127.0.0.1")
    context = ssl.create_default_context(cafile=cafile)
    client = make_client(url=server.url, ssl_context=context)
    client.start()
    assert client.wait_until_connected(t(5))


@pytest.mark.parametrize("hostname, give_ca", [("127.0.0.1", False), ("other.example", True)])
def test_untrusted_or_mismatched_certificates_fail_clearly_and_are_not_retried(
        tls_server, make_client, caplog_hermes, hostname, give_ca):
    server, cafile = tls_server(hostname)
    gave_up = []
    client = make_client(url=server.url, ca_file=cafile if give_ca else None, on_give_up=gave_up.append)
    client.start()
    wait_until(lambda: gave_up, t(5), "give up")
    assert isinstance(gave_up[0], ssl.SSLCertVerificationError)
    gevent.sleep(t(0.3))
    assert client.status()["retry_count"] == 0 and not client.connected  # one attempt, no retries
    assert not server.of("connect")  # never fell back to an unverified connection
    errors = [r.getMessage() for r in caplog_hermes.records if r.levelname == "ERROR"]
    assert any("TLS certificate rejected" in e for e in errors), errors


@pytest.mark.parametrize("hostname", ["127.0.0.1", "other.example"])
def test_a_standard_library_context_in_an_unpatched_process(tls_server, hostname):
    """The context's TLS runs in memory over gevent's socket (SSLContext.wrap_bio), verified as usual."""
    server, cafile = tls_server(hostname)
    server.command(cmd="mode", echo=True)
    out, _ = run_script([sys.executable, str(TESTS / "scripts" / "tls_unpatched.py"), server.url, cafile], t(40))
    report = json.loads(out.splitlines()[-1])
    if hostname == "127.0.0.1":
        assert report["connected"] and report["socket"] == "_MemoryTLS"
        assert report["echoes"] == [len("over tls, unpatched"), 1 << 20] and report["undelivered"] == 0
    else:
        assert not report["connected"] and report["gave_up"] == ["SSLCertVerificationError"]
        assert not server.of("connect")
