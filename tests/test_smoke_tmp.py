from .conftest import t, wait_until

def test_roundtrip(server, make_client):
    server.command(cmd="mode", echo=True)
    got = []
    c = make_client(url=server.url, on_message=got.append, identifier="abc")
    c.start()
    assert c.wait_until_connected(t(5))
    for i in range(10):
        assert c.send_message(f"m-{i}")
    wait_until(lambda: len(got) == 10, t(5))
    assert got == [f"m-{i}" for i in range(10)]
    assert server.texts() == got
    print(c.status())
    assert c.stop() == 0
    ev = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert ev["code"] == 1000, ev
    print(server.events[:2])
