"""The object store goes away for ~20 s in the middle of a checkpoint upload; the run rides it out.

moto keeps buckets in memory and loses them on restart, so the outage is made by a TCP proxy on 127.0.0.1
between the run and moto: when it sees the upload of a checkpoint's state.pt it drops every connection
and refuses new ones for OUTAGE_S seconds, then forwards again.
"""

import re
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from data_loader import storage
from maskgan.run import checkpoints
from maskgan.training import train

OUTAGE_S = 20


class FlakyProxy:
    def __init__(self, target: str, trigger: bytes):
        u = urlparse(target)
        self.target = (u.hostname, u.port)
        self.trigger = re.compile(trigger)
        self.down_until = 0.0
        self.outages = 0
        self.refused = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if time.time() < self.down_until:
                self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: the store is unreachable
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, inspect):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if inspect and self.outages == 0 and self.trigger.search(data):
                    self.outages += 1
                    self.down_until = time.time() + OUTAGE_S
                    self._drop_all()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def _drop_all(self):
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()

    def close(self):
        self._stop = True
        self.sock.close()
        self._drop_all()


@pytest.fixture
def flaky_s3(s3_server):
    proxy = FlakyProxy(s3_server, trigger=rb"PUT /[^ ]*checkpoint_[^ ]*/state\.pt")
    yield proxy
    proxy.close()


def test_checkpoint_upload_survives_an_object_store_outage(ray_session, small_cfg, bucket, flaky_s3):
    cfg = small_cfg.replace(train={"epochs": 2, "storage": f"s3://{bucket}/runs", "name": "outage"},
                            data={"endpoint_url": flaky_s3.url})
    started = time.time()
    result = train.fit(cfg)
    assert flaky_s3.outages == 1, "the proxy never saw a checkpoint upload"
    assert flaky_s3.refused > 0, "nothing tried to reach the store during the outage"
    assert time.time() - started > OUTAGE_S  # the run really waited the outage out
    assert result.metrics["epoch"] == 1
    run = storage.resolve(f"s3://{bucket}/runs/outage", flaky_s3.url)
    epochs = [e for e, _ in checkpoints.list_checkpoints(run)]
    assert epochs == [0, 1]
    for _, loc in checkpoints.list_checkpoints(run):
        checkpoints.read_checkpoint(loc)  # complete and verified, none half-written
    latest, _ = checkpoints.latest_checkpoint(run)
    assert latest["epoch"] == 1
