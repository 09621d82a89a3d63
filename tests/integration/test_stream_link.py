"""The stream benchmark's bad link (loadtest/stream_link.py): in a network namespace of its own, UDP is lost at the
rate asked and the loopback is shaped; TCP and the machine's own network are left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtest import stream_link

# In the namespace: the link applied, then 1,000 UDP datagrams into a receive buffer that holds them all, and a TCP
# exchange; prints the datagrams received and the qdisc.
PROBE = """
import socket, subprocess, sys
from loadtest import stream_link
stream_link.apply(float(sys.argv[1]), float(sys.argv[2]))
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# Room for every datagram: a receiver descheduled on a busy machine must not lose any to its own buffer.
rx.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", socket.SO_RCVBUF), 8 << 20)
rx.bind(("127.0.0.1", 0))
rx.setblocking(False)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
got = 0
def drain():
    global got
    try:
        while True:
            rx.recv(2048)
            got += 1
    except BlockingIOError:
        pass
for i in range(1000):
    tx.sendto(b"x" * 1000, rx.getsockname())
    if i % 8 == 0:
        drain()
rx.setblocking(True)
rx.settimeout(0.5)
try:
    while True:
        rx.recv(2048)
        got += 1
except socket.timeout:
    pass
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
conn, _ = server.accept()
client.sendall(b"y" * 100_000)
client.close()
received = b""
while chunk := conn.recv(65536):
    received += chunk
qdisc = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
print(got, len(received), qdisc.split()[1] if qdisc.strip() else "-")
"""


def _probe(loss_pct: float, rate_mbit: float) -> tuple[int, int, str]:
    done = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", PROBE, str(loss_pct), str(rate_mbit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.fail(f"no network namespace here (unshare --net needs root or user namespaces): {done.stderr}")
    assert done.returncode == 0, done.stderr[-2000:]
    got, tcp, qdisc = done.stdout.split()
    return int(got), int(tcp), qdisc


def test_a_bad_link_loses_udp_at_the_rate_asked_and_tcp_not_at_all() -> None:
    got, tcp, qdisc = _probe(20, 0)
    # 20% of 1,000 lost: 800 expected, with a binomial spread of about 13; far outside that is a broken rule.
    assert 700 <= got <= 900, got
    assert tcp == 100_000 and qdisc == "noqueue"


def test_a_shaped_link_queues_on_a_token_bucket_and_loses_nothing_by_itself() -> None:
    got, tcp, qdisc = _probe(0, 50)
    assert qdisc == "tbf" and tcp == 100_000
    assert got == 1000


def test_the_link_is_checked_and_the_machines_own_network_is_untouched() -> None:
    with pytest.raises(ValueError, match="link_loss_pct"):
        stream_link.nft_rules(101)
    with pytest.raises(ValueError, match="link_rate_mbit"):
        stream_link.tc_command(0)
    assert "< 100 drop" in stream_link.nft_rules(1)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "cloudseat_link" not in tables
