"""The VICI test server against the real `vici` client (and the README bytes)."""

import socket
import struct
import threading

import pytest
import vici
import vici_client
from vici.exception import EventUnknownException, SessionException
from vici_client import text
from vici_server import CMD_REQUEST, EVENT, ProtocolError, ViciTestServer, decode_message, encode_message, encode_packet

GW = {"gw": {"uniqueid": "1", "state": "ESTABLISHED", "child-sas": {
    "net4-1": {"name": "net4", "uniqueid": "1", "local-ts": ["10.10.1.0/24"]},
    "net6-2": {"name": "net6", "uniqueid": "2", "local-ts": ["fd00:1::/64"]},
}}}
HOST = {"host": {"uniqueid": "2", "child-sas": {
    "host-3": {"name": "host", "uniqueid": "3"}}}}


@pytest.fixture
def server(tmp_path):
    with ViciTestServer(tmp_path / "charon.vici") as srv:
        yield srv
    assert not srv.errors


def session(server, timeout=5):
    return vici_client.session(server.path, timeout)


def test_readme_encoding_example():
    """The example from strongSwan's vici/README.md, byte for byte."""
    expected = (b"\x03\x04key1\x00\x06value1"
                b"\x01\x08section1" b"\x01\x0bsub-section"
                b"\x03\x04key2\x00\x06value2" b"\x02"
                b"\x04\x05list1" b"\x05\x00\x05item1" b"\x05\x00\x05item2" b"\x06"
                b"\x02")
    message = {"key1": "value1", "section1": {
        "sub-section": {"key2": b"value2"}, "list1": ["item1", "item2"]}}
    assert encode_message(message) == expected
    assert decode_message(expected) == {"key1": "value1", "section1": {
        "sub-section": {"key2": "value2"}, "list1": ["item1", "item2"]}}


@pytest.mark.parametrize("raw", [
    b"\x02",                        # section end at root
    b"\x01\x01s",                   # unterminated section
    b"\x05\x00\x01x",               # list item outside a list
    b"\x04\x01l\x03\x01k\x00\x00",  # key/value inside a list
    b"\x03\x01k\x00\x05ab",         # truncated value
    b"\x03\x01k\x00\x00\x03\x01k\x00\x00",  # duplicate key
    b"\x09",                        # unknown element
])
def test_decoder_is_strict(raw):
    with pytest.raises(ProtocolError):
        decode_message(raw)


def test_version(server):
    assert text(session(server).version()) == {
        "daemon": "charon", "version": "5.9.8", "sysname": "Linux",
        "release": "6.1.0-28-amd64", "machine": "x86_64"}
    server.version = {"daemon": "charon", "version": "6.0.1"}
    assert text(session(server).version())["version"] == "6.0.1"
    assert server.requests("version") == [{}, {}]


@pytest.mark.parametrize("filters, expected", [
    ({}, {"gw": ["net4-1", "net6-2"], "host": ["host-3"]}),
    ({"ike": "gw"}, {"gw": ["net4-1", "net6-2"]}),
    ({"ike-id": 2}, {"host": ["host-3"]}),
    # like charon, child filters keep every IKE_SA and prune its children
    ({"child": "net6"}, {"gw": ["net6-2"], "host": []}),
    ({"ike": "gw", "child-id": "1"}, {"gw": ["net4-1"]}),
    ({"ike": "nope"}, {}),
])
def test_list_sas_filters(server, filters, expected):
    server.sas = [GW, HOST]
    listed = {}
    for sa in session(server).list_sas(filters):
        (name, ike), = sa.items()
        listed[name] = list(ike["child-sas"])
    assert listed == expected
    assert server.requests("list-sas") == [{k: str(v) for k, v in filters.items()}]
    assert server.sas == [GW, HOST]          # serving does not mutate


def test_list_sas_values_round_trip(server):
    server.sas = [GW]
    (sa,) = session(server).list_sas()
    assert text(sa) == GW


def test_a_list_sa_event_over_512_kib_is_discarded_and_the_response_still_comes(server):
    """As charon's vici_socket.c send_(): the message is dropped, the command answers."""
    kids = {f"c{i}-{i}": {"name": f"c{i}", "uniqueid": str(i), "local-ts": ["10.10.1.0/24"], "pad": "x" * 300} for i in range(1700)}
    server.sas = [{"hub": {"uniqueid": "1", "child-sas": kids}}, HOST]
    assert len(encode_message(server.sas[0])) > 512 * 1024
    assert [list(sa) for sa in session(server).list_sas()] == [["host"]]
    assert server.discarded == 1
    (sa,) = session(server).list_sas({"ike": "hub", "child-id": "7"})  # one CHILD_SA of it fits
    assert list(sa["hub"]["child-sas"]) == ["c7-7"]


def test_list_sa_events_only_reach_the_asking_connection(server):
    server.sas = [GW]
    events = session(server).listen(["list-sa"], timeout=0.1)
    assert next(events) == (None, None)
    assert len(list(session(server).list_sas())) == 1
    assert next(events) == (None, None)


def test_events_reach_listeners(server):
    events = session(server).listen(["child-updown", "child-rekey"], timeout=0.2)
    assert next(events) == (None, None)      # registered, nothing yet
    assert server.registered("child-updown") == 1
    assert server.emit("child-updown", {"up": "yes", **GW}) == 1
    assert server.emit("ike-updown", {"up": "yes"}) == 0
    label, message = next(events)
    assert label == b"child-updown" and text(message) == {"up": "yes", **GW}
    events.close()                           # unregisters
    assert server.wait_log("unregister", "child-rekey")
    assert server.registered("child-updown") == 0


def test_events_from_another_thread(server):
    received = []

    def listen():
        for label, message in session(server).listen(["ike-rekey"]):
            received.append((label, text(message)))
            return

    thread = threading.Thread(target=listen)
    thread.start()
    assert server.wait_registered("ike-rekey")
    server.emit("ike-rekey", {"gw": {"old": {"uniqueid": "1"}, "new": {"uniqueid": "3"}}})
    thread.join(5)
    assert received == [(b"ike-rekey",
                         {"gw": {"old": {"uniqueid": "1"}, "new": {"uniqueid": "3"}}})]


def test_unknown_command_and_event(server):
    s = session(server)
    with pytest.raises(SessionException, match="response type 2"):
        s.request("no-such-command")
    with pytest.raises(EventUnknownException):
        next(s.listen(["no-such-event"]))
    assert s.version()["daemon"] == b"charon"    # connection still usable


def test_custom_command(server):
    server.commands["terminate"] = lambda req: {"success": "yes", "matches": "1"}
    assert text(session(server).request("terminate", {"child-id": "5"})) == {
        "success": "yes", "matches": "1"}
    assert server.requests("terminate") == [{"child-id": "5"}]


def test_drop_and_reconnect(server):
    events = session(server).listen(["child-updown"], timeout=0.2)
    assert next(events) == (None, None)
    server.drop_connections()
    with pytest.raises(OSError):
        next(events)
    assert server.connections == 0
    assert server.registered("child-updown") == 0
    assert text(session(server).version())["daemon"] == "charon"


def test_pause_looks_like_a_dead_charon(server):
    server.pause()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        session(server)
    server.resume()
    assert text(session(server).version())["version"] == "5.9.8"
    server.pause(stale=True)                  # what an exited charon leaves
    with pytest.raises(ConnectionRefusedError):
        session(server)
    server.resume()
    assert text(session(server).version())["daemon"] == "charon"


def test_double_registration_delivers_twice(server):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(server.path)
    for _ in range(2):
        sock.sendall(encode_packet(3, "log"))
        assert sock.recv(5) == b"\x00\x00\x00\x01\x05"
    assert server.emit("log", {"msg": "hi"}) == 2


def test_send_raw_reaches_registered_connections(server):
    events = session(server).listen(["child-rekey"], timeout=0.1)
    assert next(events) == (None, None)
    session(server).version()                 # unregistered: gets nothing
    bogus = struct.pack("!I", 3) + bytes([EVENT, 5]) + b"x"   # name overruns
    assert server.send_raw(bogus) == 1


def test_client_protocol_errors_are_recorded(tmp_path):
    with ViciTestServer(tmp_path / "v") as srv:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(srv.path)
        bad = bytes([CMD_REQUEST, 7]) + b"version" + b"\x01\x01s"   # open section
        sock.sendall(struct.pack("!I", len(bad)) + bad)
        sock.sendall(encode_packet(1))                              # a response?
        sock.sendall(encode_packet(CMD_REQUEST, "version"))
        sock.settimeout(5)
        assert sock.recv(1024)[4] == 1
        assert srv.wait_log("command", "version", count=2)
        sock.close()
    assert len(srv.errors) == 2
    assert "unterminated section" in srv.errors[0]
    assert "packet type 1" in srv.errors[1]


def test_handler_errors_are_recorded(tmp_path):
    with ViciTestServer(tmp_path / "v") as srv:
        srv.sas = [{"gw": {"uniqueid": "not-a-number"}}]
        with pytest.raises(vici.exception.CommandException, match="test server"):
            list(session(srv).list_sas({"ike-id": "1"}))
    assert len(srv.errors) == 1 and "list-sas" in srv.errors[0]
