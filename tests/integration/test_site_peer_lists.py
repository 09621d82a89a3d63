"""The agents linked to a broker process hear their site's list of hosts when it changes, coalesced: changes that
arrive together cost one read per site and one command per link (broker.links.LinkRegistry.on_sites_change), on a real
PostgreSQL. A broker restart has every host of a site register at once; one notification and one read per host
and change made a 250-host site cost 62,500 of each."""

from __future__ import annotations

import asyncio

from cloudseat.client import BrokerClient

from broker.links import AgentLink, LinkRegistry
from broker.store import database
from broker.store import hosts as host_store


def _told(link: AgentLink) -> list[list[tuple[str, str]]]:
    out = []
    while not link.outbox.empty():
        msg = link.outbox.get_nowait()
        assert msg is not None
        if msg.WhichOneof("body") == "site_peers":
            out.append([(p.host_id, p.address) for p in msg.site_peers.peers])
    return out


async def test_many_changes_of_a_site_are_answered_with_one_list_per_link(world: BrokerClient, db_url: str) -> None:
    pool = await database.create_pool(db_url, 1, 2)
    links = LinkRegistry(pool)
    try:
        for i in range(12):
            site = "site-near" if i < 10 else "site-far"
            await host_store.register(
                pool,
                host_store.Registration(
                    host_id=f"h{i:02d}", provider_id="prov", site_id=site, epoch=1, agent_version="test",
                    gpu_class="cpu", slots=1, price_micros=1_000_000, peer_address=f"127.0.0.1:{7000 + i}",
                ),
            )
        near = [AgentLink(f"h{i:02d}", 1, "site-near") for i in range(3)]
        far = AgentLink("h10", 1, "site-far")
        for link in [*near, far]:
            links.attach(link)
        # Ten registrations at the near site, as a restart brings them: their notifications arrive together.
        for i in range(10):
            links.on_sites_change({"site_peers": ["site-near"], "except": f"h{i:02d}"})
        for _ in range(100):  # bounded: the refresh runs after a short coalescing delay
            if all(not link.outbox.empty() for link in near):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room for a second (wrong) answer to arrive
        expected = [(f"h{i:02d}", f"127.0.0.1:{7000 + i}") for i in range(10)]
        for link in near:
            assert _told(link) == [expected], link.host_id
        assert _told(far) == []  # the other site's hosts are not told

        # A change by one host alone: the others are told, it is not (it got its list at its registration).
        links.on_sites_change({"site_peers": ["site-near"], "except": "h01"})
        for _ in range(100):
            if not near[0].outbox.empty():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert _told(near[0]) == [expected] and _told(near[2]) == [expected]
        assert _told(near[1]) == []
    finally:
        await links.close()
        await pool.close()
