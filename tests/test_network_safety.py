"""The network is closed by default: the 0MQ proxy on loopback, documents as msgpack (never
pickle), Channel Access writes only from the configured hosts, detector files only under
the IOC's write root, the catalogue's API key on no command line."""

import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import event_model
import msgpack
import numpy as np
import pytest
import zmq
from bluesky import plans as bp
from caproto import AccessRights
from caproto.sync.client import ErrorResponseReceived, read, write
from event_model import DocumentNames, schema_validators
from ophyd import Signal

from acquisition.processing.remote import make_proxy, publisher, serialize, start_dispatcher
from support import small_config
from ioc_fixture import _free_port, searching_port, spawn_ioc, stop_ioc

REPO = Path(__file__).resolve().parents[1]


class MakesDirectory:
    """Unpickling this creates a directory: what an attacker's pickle could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


# --- the 0MQ proxy ------------------------------------------------------------------------

def start_proxy(request, bind=None) -> tuple[int, int]:
    """``talbot-lau proxy`` (with ``--bind``) on two free ports, once it listens."""
    in_port, out_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "acquisition.cli", "proxy", "--in-port", str(in_port),
               "--out-port", str(out_port)] + (["--bind", bind] if bind else [])
    proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    request.addfinalizer(lambda: (proxy.kill(), proxy.wait()))
    for port in (in_port, out_port):
        deadline = time.monotonic() + 20
        while not listening_addresses(port):
            assert proxy.poll() is None and time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)
    return in_port, out_port


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (/proc/net/tcp{,6})."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0])
                           for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    candidates = set()
    try:
        candidates.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # routing only: no packet is sent
            candidates.add(probe.getsockname()[0])
    except OSError:
        pass
    candidates = sorted(a for a in candidates if not a.startswith("127.") and a != "0.0.0.0")
    return candidates[0] if candidates else None


@pytest.fixture(scope="module")
def proxy(request) -> tuple[int, int]:
    """``talbot-lau proxy`` as started by default: (in_port, out_port)."""
    return start_proxy(request)


def test_proxy_listens_on_loopback_only(proxy):
    for port in proxy:
        assert listening_addresses(port) == {"127.0.0.1"}
    address = non_loopback_address()
    if address is not None:  # nobody reaches it at this machine's network address
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, proxy[0])) != 0


@pytest.mark.slow
def test_proxy_listens_where_bind_says(request):
    for port in start_proxy(request, bind="127.0.0.2"):  # another loopback address
        assert listening_addresses(port) == {"127.0.0.2"}


def test_proxy_object_binds_loopback():
    in_port, out_port = _free_port(), _free_port()
    proxy = make_proxy(in_port, out_port)
    try:
        assert proxy._frontend.getsockopt(zmq.LAST_ENDPOINT) == f"tcp://127.0.0.1:{in_port}".encode()
        assert proxy._backend.getsockopt(zmq.LAST_ENDPOINT) == f"tcp://127.0.0.1:{out_port}".encode()
    finally:
        proxy._frontend.close()
        proxy._backend.close()
        proxy._context.destroy()


class Received:
    """A dispatcher callback: (name, doc) in arrival order."""

    def __init__(self):
        self.documents = []

    def __call__(self, name, doc):
        self.documents.append((name, doc))

    def wait_for(self, test, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [doc for name, doc in self.documents if test(name, doc)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError("the document did not arrive")


def test_a_pickle_is_never_executed_and_the_dispatcher_survives(proxy, request, tmp_path, caplog):
    in_port, out_port = proxy
    received = Received()
    stop = start_dispatcher(("127.0.0.1", out_port), [received])
    request.addfinalizer(stop)
    context = zmq.Context()
    sender = context.socket(zmq.PUB)  # closed by the finalizer, which holds it past the test
    request.addfinalizer(lambda: (sender.close(linger=0), context.term()))  # unsent: dropped
    sender.connect(f"tcp://127.0.0.1:{in_port}")
    object_array = {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1],
                    b"data": pickle.dumps(MakesDirectory(tmp_path / "by-msgpack-numpy"))}
    bad = [b" start " + pickle.dumps({"uid": "x", "payload": MakesDirectory(tmp_path / "by-pickle")}),
           b" start " + msgpack.packb({"uid": "y", "time": 0, "a": object_array}, use_bin_type=True),
           b" surprise " + serialize({"uid": "z"}),  # no such document name
           b" start " + serialize([1, 2, 3]),  # not a document
           b"no-spaces-at-all"]

    def good(number):
        start = event_model.compose_run(metadata={"probe": number}).start_doc
        return b" start " + serialize(start)

    caplog.set_level(logging.WARNING, logger="acquisition.processing.remote")
    for attempt in range(100):  # until the 0MQ connections are up
        for message in bad + [good(attempt)]:
            sender.send(message)
        if received.documents:
            break
        time.sleep(0.1)
    received.wait_for(lambda name, doc: doc.get("probe") == attempt)  # and all sent before it
    caplog.clear()
    for message in bad + [good(-1)]:  # all of these arrive, in order, on the live connection
        sender.send(message)
    start = received.wait_for(lambda name, doc: doc.get("probe") == -1)
    schema_validators[DocumentNames.start].validate(start)
    assert not (tmp_path / "by-pickle").exists()
    assert not (tmp_path / "by-msgpack-numpy").exists()
    assert {name for name, _ in received.documents} == {"start"}
    assert all("probe" in doc for _, doc in received.documents)
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == len(bad)


def same(sent, got) -> bool:
    """Equal after msgpack: tuples become lists, numpy arrays and scalars keep their dtype."""
    if isinstance(sent, np.ndarray):
        return isinstance(got, np.ndarray) and sent.dtype == got.dtype and np.array_equal(sent, got)
    if isinstance(sent, np.generic):
        return type(got) is type(sent) and sent == got
    if isinstance(sent, dict):
        return (isinstance(got, dict) and sent.keys() == got.keys()
                and all(same(sent[k], got[k]) for k in sent))
    if isinstance(sent, (list, tuple)):
        return isinstance(got, list) and len(sent) == len(got) and all(map(same, sent, got))
    return type(got) is type(sent) and sent == got


def test_documents_round_trip_over_the_proxy_as_msgpack(RE, proxy, request):
    in_port, out_port = proxy
    received = Received()
    stop = start_dispatcher(("127.0.0.1", out_port), [received])
    request.addfinalizer(stop)
    publish = publisher(("127.0.0.1", in_port))
    request.addfinalizer(publish.close)
    for attempt in range(100):  # until the 0MQ connections are up
        publish("start", event_model.compose_run(metadata={"probe": attempt}).start_doc)
        if received.documents:
            break
        time.sleep(0.1)
    sent = []
    RE.subscribe(lambda name, doc: sent.append((name, doc)))
    RE.subscribe(publish)
    image = Signal(value=np.arange(12, dtype=np.uint16).reshape(3, 4), name="image")
    current = Signal(value=np.float32(1.5), name="current")
    counter = Signal(value=np.int64(7), name="counter")
    (uid,) = RE(bp.count([image, current, counter], num=2),
                    sample={"id": "S-1", "position_mm": (1.0, -2.5)})
    received.wait_for(lambda name, doc: name == "stop" and doc["run_start"] == uid)
    run = [(name, doc) for name, doc in received.documents if "probe" not in doc]
    assert [name for name, _ in run] == [name for name, _ in sent]
    for (name, original), (_, doc) in zip(sent, run):
        schema_validators[DocumentNames[name]].validate(doc)
        assert same(original, doc), (name, original, doc)
    events = [doc for name, doc in run if name == "event"]
    assert events[0]["data"]["image"].dtype == np.uint16 and events[0]["data"]["image"].shape == (3, 4)
    assert events[0]["data"]["image"].flags.writeable
    assert run[0][1]["sample"]["position_mm"] == [1.0, -2.5]


# --- Channel Access -----------------------------------------------------------------------

def test_access_rule_writes_only_from_the_write_hosts(tmp_path):
    from simulators.ioc.server import build_ioc

    config = small_config(rows=32, cols=48)
    ioc = build_ioc("U:", config.setup, None, write_path=tmp_path, time_scale=0.0)  # loopback
    setting, readback, field = (ioc.pvdb["U:det:HDF1:FilePath"], ioc.pvdb["U:det:HDF1:FilePath_RBV"],
                                ioc.pvdb["U:g2"].fields["HLM"])
    both = AccessRights.READ | AccessRights.WRITE
    for channel in (setting, field):
        assert channel.check_access("127.0.0.1", "me") == both
        assert channel.check_access("192.0.2.7", "me") == AccessRights.READ  # another host reads
        assert channel.check_access("localhost", "me") == AccessRights.READ  # a claimed name: no
    assert readback.check_access("127.0.0.1", "me") == AccessRights.READ  # read-only stays so
    lab = build_ioc("V:", config.setup, None, write_path=tmp_path, time_scale=0.0,
                    write_hosts=["192.0.2.0/24"])
    assert lab.pvdb["V:g2"].check_access("192.0.2.7", "me") == both
    assert lab.pvdb["V:g2"].check_access("127.0.0.1", "me") == AccessRights.READ


@pytest.mark.slow
@pytest.mark.ioc
def test_a_client_not_among_the_write_hosts_reads_but_cannot_write(tmp_path):
    """An IOC that lets only 192.0.2.1 write, a client on loopback."""
    port, prefix = _free_port(), f"W{uuid.uuid4().hex[:6]}:"
    (tmp_path / "frames").mkdir()
    process = spawn_ioc(prefix, port, tmp_path / "frames", extra_args=["--write-hosts", "192.0.2.1"])
    try:
        with searching_port(port):  # this test's caproto client only
            limit = read(prefix + "g2.HLM", timeout=2, repeater=False).data[0]
            for pv, value in ((prefix + "g2.HLM", limit + 1.0), (prefix + "tube:Shutter", 1),
                              (prefix + "det:HDF1:FilePath", str(tmp_path / "frames" / "x"))):
                with pytest.raises(ErrorResponseReceived, match="cannot write"):
                    write(pv, value, notify=True, timeout=2, repeater=False)
            assert read(prefix + "g2.HLM", timeout=2, repeater=False).data[0] == limit
        assert not (tmp_path / "frames" / "x").exists()
    finally:
        stop_ioc(process)


def text(pv: str) -> str:
    data = read(pv, timeout=2, repeater=False).data
    if isinstance(data, np.ndarray) and data.dtype.kind in "iu":  # a CHAR waveform
        return bytes(data.astype(np.uint8)).rstrip(b"\0").decode("latin-1")
    return data[0].decode() if isinstance(data[0], bytes) else str(data[0])  # strings, enums


def test_file_path_outside_the_write_root_is_refused(ioc, tmp_path):
    hdf = ioc.pv("det:HDF1:")
    outside = tmp_path / "outside"
    target = tmp_path / "target"
    target.mkdir()
    link = ioc.write_path / f"link-{uuid.uuid4().hex[:6]}"
    link.symlink_to(target)  # inside the root, pointing out of it
    inside = ioc.write_path / f"inside-{uuid.uuid4().hex[:6]}"
    escaped = f"escaped-{uuid.uuid4().hex[:6]}"
    name = text(hdf + "FileName") or "image"
    try:
        for path in (outside, link / "sub", f"{ioc.write_path}/../{escaped}"):
            with pytest.raises(ErrorResponseReceived, match="outside the write root"):
                write(hdf + "FilePath", str(path), notify=True, timeout=2, repeater=False)
            assert text(hdf + "WriteStatus") == "Write error"
            assert "outside the write root" in text(hdf + "WriteMessage")
        assert not outside.exists() and not (target / "sub").exists()
        assert not (ioc.write_path.parent / escaped).exists()

        write(hdf + "FilePath", str(inside), notify=True, timeout=2, repeater=False)  # no trailing /
        assert text(hdf + "FilePath_RBV") == f"{inside}/" and inside.is_dir()
        assert text(hdf + "FilePathExists_RBV") == "Yes"
        write(hdf + "FileWriteMode", "Stream", notify=True, timeout=2, repeater=False)
        write(hdf + "FileName", f"../../{escaped}", notify=True, timeout=2, repeater=False)
        with pytest.raises(ErrorResponseReceived, match="outside the write root"):  # no file there
            write(hdf + "Capture", "Capture", notify=True, timeout=2, repeater=False)
        assert text(hdf + "WriteStatus") == "Write error" and text(hdf + "Capture_RBV") == "Done"
        assert not list(ioc.write_path.parent.glob(f"{escaped}*"))
    finally:
        write(hdf + "FileName", name, notify=True, timeout=2, repeater=False)
        write(hdf + "FilePath", str(ioc.write_path), notify=True, timeout=2, repeater=False)
        link.unlink()


# --- the catalogue's API key --------------------------------------------------------------

@pytest.mark.slow
def test_catalogue_key_is_on_no_command_line_and_never_printed(tmp_path):
    directory, port = tmp_path / "catalogue", _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TALBOT_LAU_API_KEY"}
    cli = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "catalogue", str(directory), "--create",
                            "--port", str(port)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    server = None
    try:
        printed = [cli.stdout.readline() for _ in range(3)]
        key_file = directory / "api_key"
        key = key_file.read_text().strip()
        assert key_file.stat().st_mode & 0o777 == 0o600 and len(key) == 64
        assert str(key_file) in printed[0] and not any(key in line for line in printed)
        deadline = time.monotonic() + 60
        while server is None:
            assert cli.poll() is None and time.monotonic() < deadline, "no tiled server"
            with open(f"/proc/{cli.pid}/task/{cli.pid}/children") as f:
                children = f.read().split()
            server = int(children[0]) if children else None
            time.sleep(0.05)
        with open(f"/proc/{server}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{server}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"tiled" in cmdline and key.encode() not in cmdline
        assert f"TILED_SINGLE_USER_API_KEY={key}".encode() in environ
        for line in cli.stderr:  # the server's output, passed on
            assert key not in line
            if "api_key=" in line:
                assert "api_key=<api key>" in line  # tiled printed its URL with the key: masked
                break
        else:
            raise AssertionError("tiled printed no URL")
    finally:
        if server is not None:
            os.kill(server, signal.SIGTERM)
        try:
            out, err = cli.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            cli.kill()
            out, err = cli.communicate()
    assert key not in out and key not in err
