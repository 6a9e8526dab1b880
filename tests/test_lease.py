"""Leases and outbox locations as values: plain asserts, no clock, no database."""

import pytest

from hermes_gevent import ConfigError
from hermes_gevent.lease import Lease, owner_token
from hermes_gevent.store_url import locate, shown_url


def test_a_lease_is_fresh_until_its_check_point_and_lapsed_at_its_timeout():
    lease = Lease(timeout=25, check_after=15)
    assert not lease.fresh(0) and lease.lapsed(0)  # never renewed: ask the store first
    renewed = lease.renewed(100)
    assert renewed.fresh(100) and renewed.fresh(114.9)
    assert not renewed.fresh(115) and not renewed.lapsed(115)  # check with the store, still ours
    assert renewed.lapsed(125)  # another process may have taken it over


def test_a_renewal_counts_from_when_it_began_and_never_goes_back():
    lease = Lease(timeout=25, check_after=15).renewed(100)
    assert lease.renewed(90).renewed_at == 100  # an older renewal answering late changes nothing
    assert lease.renewed(110).renewed_at == 110
    assert lease.forgotten().renewed_at is None and lease.forgotten().timeout == 25


def test_the_check_point_defaults_to_a_fraction_of_the_timeout_and_must_fit_in_it():
    assert Lease(timeout=10).check_after == pytest.approx(6)
    with pytest.raises(ValueError):
        Lease(timeout=10, check_after=11)


def test_owner_tokens_name_host_and_pid_and_differ_between_runs():
    first, second = owner_token("web-3", 4121), owner_token("web-3", 4121)
    assert first.startswith("web-3:4121:") and second.startswith("web-3:4121:") and first != second


@pytest.mark.parametrize("url, kind, shown", [
    ("postgresql://app:pw@db:5433/orders", "postgres", "postgresql://db:5433/orders"),
    ("postgres://app:pw@db/orders", "postgres", "postgresql://db:5432/orders"),
    ("postgresql+psycopg://app:pw@db/orders?sslmode=require", "postgres", "postgresql://db:5432/orders"),
    ("sqlite:///relative/o.db", "sqlite", "sqlite:///relative/o.db"),
    ("sqlite:////abs/o.db", "sqlite", "sqlite:////abs/o.db"),
])
def test_outbox_urls_locate_their_store_and_show_no_password(url, kind, shown):
    location = locate(url, None)
    assert (location.kind, location.shown) == (kind, shown)
    assert "pw" not in repr(location)
    if kind == "postgres":
        assert location.conninfo.startswith("postgresql://app:pw@")  # the driver gets it; nothing else shows it


def test_a_password_in_the_query_is_hidden_too():
    assert "pw" not in shown_url("postgresql://db/app?password=pw&sslmode=require")
    assert shown_url("postgresql://app:pw@db/app") == "postgresql://app@db/app"


@pytest.mark.parametrize("url, path, table, names", [
    ("ftp://db/x", None, "hermes_outbox", ["OUTBOX_URL"]),
    ("postgresql://db:notaport/x", None, "hermes_outbox", ["OUTBOX_URL"]),
    ("postgresql://", None, "hermes_outbox", ["OUTBOX_URL"]),
    ("sqlite:///o.db", "/tmp/o.db", "hermes_outbox", ["OUTBOX_URL", "OUTBOX_PATH"]),
    ("postgresql://db/x", None, "x; drop table y", ["OUTBOX_TABLE"]),
    (None, None, "", ["OUTBOX_TABLE"]),
])
def test_bad_locations_are_config_errors_naming_the_settings(url, path, table, names):
    with pytest.raises(ConfigError) as raised:
        locate(url, path, table)
    assert all(name in str(raised.value) for name in names)


def test_no_url_and_no_path_is_memory_only():
    assert locate(None, None) is None and locate("", "") is None
    assert locate(None, "/tmp/o.db").kind == "sqlite"


@pytest.mark.parametrize("password", ["se/cret-Pw1", "se#cret-Pw1", "se?cret@Pw1", "p%zz-S3cret", "se:cret-Pw1"])
def test_a_password_with_url_characters_never_shows_and_reaches_the_driver_whole(password):
    url = f"postgresql://app:{password}@db:5433/orders"
    location = locate(url, None)
    assert location.shown == "postgresql://db:5433/orders"
    assert password not in shown_url(url) and password in location.secrets
    from urllib.parse import unquote, urlsplit
    assert unquote(urlsplit(location.conninfo).password) == unquote(password)
    assert password not in repr(location)
    from hermes_gevent import WebSocketClient
    client = WebSocketClient(url="ws://127.0.0.1:1/ws", outbox_url=url)
    assert password not in repr(client.settings) and password not in str(client.status())
