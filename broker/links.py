"""The agents' links this broker process holds: one per host, what the broker tells each agent, the negotiation relay,
and each link's life recorded where every process can judge it.

A link lives as long as its transport: the agents' gRPC server pings every agent connection below Python (HTTP/2
keepalive, `broker.roles.agent_server_options`) and ends the stream of one that stops answering, so a killed,
frozen or cut-off agent is seen within two ping intervals without a single message. A link that ends without the
agent's Goodbye is recorded as lost at that moment (hosts.link_lost_at, database clock); the placement leader
declares the host lost once the grace for a reconnect has passed. A Goodbye takes the host offline at once.

Commands follow from session and host changes (hub notifications), so it does not matter which process placed or
ended a session, or drained a host: the process that holds the host's link sends the command. A link the broker
retired meanwhile — its host declared lost, or taken over by a newer connection or epoch elsewhere — is closed,
told by the host change itself and checked again by `broker.replica.Presence` every few seconds, so its agent
reconnects under a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

import asyncpg
import structlog
from cloudseat import errors
from cloudseat.v1 import agent_pb2, common_pb2

from broker import lifecycle
from broker.rpc import agent_commands as commands
from broker.store import fleet as fleet_store
from broker.store import hosts as host_store
from broker.store.group_commit import GroupCommit

log = structlog.get_logger(__name__)

# Why a link the broker retired is closed; the agent's stream ends FAILED_PRECONDITION with it, and an agent told so
# about its epoch starts afresh under a new one.
LOST = "the host was declared lost; restart the agent with a new epoch"
# Site-list changes that arrive within this long are answered together (LinkRegistry.on_sites_change).
_SITE_PEERS_DELAY_S = 0.2
RETIRED = (
    "the host is no longer online on this link (declared lost, or taken over by a newer connection or epoch); "
    "restart the agent with a new epoch"
)


class AgentLink:
    """One connected agent process (host + epoch, on one connection) and what the broker sends it."""

    def __init__(self, host_id: str, epoch: int, site_id: str = "") -> None:
        self.host_id = host_id
        self.epoch = epoch
        # The site it registered at (its site's list of hosts is sent to it as it changes).
        self.site_id = site_id
        # New for every connection: a host's record names the link holding it, so an old connection's end (or
        # report) never touches a newer one's.
        self.link_id = uuid.uuid4()
        self.outbox: asyncio.Queue[agent_pb2.BrokerMessage | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        # Why the broker ended the link, when it was an error the agent should see as the stream's status.
        self.error: errors.CloudseatError | None = None
        self.negotiations: dict[str, asyncio.Future[common_pb2.SessionDescription]] = {}
        # Done when every report this link handed to the report batcher has been applied.
        self.reported: asyncio.Future[None] | None = None
        # The agent said Goodbye: it leaves on purpose.
        self.goodbye = False

    def send(self, msg: agent_pb2.BrokerMessage) -> None:
        if not self.closed.is_set():
            self.outbox.put_nowait(msg)

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.outbox.put_nowait(None)
        for fut in self.negotiations.values():
            if not fut.done():
                fut.set_exception(errors.Unavailable("the host's agent disconnected"))


class LinkRegistry:
    """The links of this process, by host."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._links: dict[str, AgentLink] = {}
        # Sites whose lists of hosts changed, each with the hosts that changed them, to be sent (on_sites_change).
        self._stale_sites: dict[str, set[str]] = {}
        self._site_refresh: asyncio.Task[None] | None = None
        self._site_read_at = float("-inf")
        # Pre-warms to send, with their site's list (on_host_change).
        self._prewarms: list[tuple[AgentLink, Mapping[str, Any]]] = []
        # Small writes started from synchronous callbacks (a lost link, re-reading drains).
        self._chores: set[asyncio.Task[None]] = set()
        # Links seen dead, recorded together: a site that loses power drops hundreds within a keepalive interval.
        self._links_lost: GroupCommit[tuple[str, uuid.UUID], None] = GroupCommit(
            self._write_links_lost, name="links-lost"
        )

    def __len__(self) -> int:
        return len(self._links)

    def link(self, host_id: str) -> AgentLink | None:
        return self._links.get(host_id)

    def links(self) -> list[AgentLink]:
        return list(self._links.values())

    def attach(self, link: AgentLink) -> None:
        """Make `link` the host's link; an older link of the same host is closed."""
        old = self._links.get(link.host_id)
        if old is not None and old is not link:
            old.close(f"replaced by a new connection (epoch {link.epoch})")
        self._links[link.host_id] = link

    def detach(self, link: AgentLink) -> None:
        """The link's stream ended. Unless the agent said Goodbye (the host went offline) or the broker retired the
        link, its transport died: record when, so the host is declared lost if its agent does not come back."""
        current = self._links.get(link.host_id) is link
        if current:
            del self._links[link.host_id]
        if current and not link.goodbye and not link.closed.is_set():
            self._chore(self._record_lost(link), f"link-lost-{link.host_id}")
        link.close(link.close_reason or "disconnected")

    async def _record_lost(self, link: AgentLink) -> None:
        try:
            await self._links_lost((link.host_id, link.link_id))
        except errors.CloudseatError as exc:
            # The broker process's own silence then tells: its presence stops when the database is out of reach.
            log.warning("could not record the lost link", host_id=link.host_id, error=str(exc))

    async def _write_links_lost(self, lost: list[tuple[str, uuid.UUID]]) -> list[None]:
        await host_store.links_lost(self._pool, lost)
        return [None] * len(lost)

    def retire(self, links: list[AgentLink], reason: str) -> None:
        for link in links:
            if self._links.get(link.host_id) is link:
                log.info("closing a retired link", host_id=link.host_id, epoch=link.epoch)
                link.close(reason)

    def _chore(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def close(self) -> None:
        for link in list(self._links.values()):
            link.close("the broker is shutting down")
        for task in [*self._chores, *([self._site_refresh] if self._site_refresh else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- host changes -> commands -----------------------------------------------------------------------------

    def on_host_change(self, change: Mapping[str, Any]) -> None:
        """A host changed (at any process): drains and pre-warms go to its agent when its link is here; a link
        that no longer holds its host (lost, offline, replaced) is closed."""
        link = self._links.get(change["host_id"])
        if link is None:
            return
        if "drained" in change:
            link.send(commands.drain_command(bool(change["drained"])))
        if "prewarm" in change:
            self._prewarms.append((link, change["prewarm"]))
            if len(self._prewarms) == 1:
                self._chore(self._send_prewarms(), "prewarms")
        if "status" in change:
            held = change["status"] == "online" and change.get("link_id") in (None, str(link.link_id))
            if not held:
                self.retire([link], LOST if change["status"] == "lost" else RETIRED)

    async def _send_prewarms(self) -> None:
        """Pre-warms go out with their site's list as it stands now (read here: a list per host in the notification
        passed NOTIFY's 8000 bytes at ~200 serving hosts), so the hosts told of one split the chunks among the same
        owners even if a site-list change is still on its way to one of them. A site's pre-warms are notified at one
        commit: they are answered together, with one read per site."""
        await asyncio.sleep(0)  # the rest of that commit's notifications, delivered in this turn of the loop
        todo, self._prewarms = self._prewarms, []
        sites = sorted({link.site_id for link, _ in todo})
        try:
            lists = await host_store.site_peer_lists(self._pool, sites)
        except errors.CloudseatError as exc:
            log.warning("could not read the sites' peers; pre-warm without them", sites=sites, error=str(exc))
            lists = {}
        for link, image in todo:
            link.send(commands.prewarm_command({**image, "peers": lists.get(link.site_id, [])}))

    def on_sites_change(self, change: Mapping[str, Any]) -> None:
        """The hosts of some sites changed (at any process): the agents linked here in those sites get their site's
        list anew, all but the host that changed it (told at its registration). Coalesced: a change alone goes at
        once, and those that arrive within _SITE_PEERS_DELAY_S of a read are answered together with one read per
        site, so a site whose hosts all register at once (a broker restart) costs a few reads, not one per host and
        change."""
        sites = {s for s in change.get("site_peers") or () if isinstance(s, str)}
        if not sites:
            return
        skip = change.get("except")
        for site in sites:
            self._stale_sites.setdefault(site, set()).add(skip if isinstance(skip, str) else "")
        if self._site_refresh is None:
            self._site_refresh = asyncio.create_task(self._send_site_peers(), name="site-peers")

    async def _send_site_peers(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._stale_sites:
                # The first change goes at once; those that follow within the delay of a read wait for its end.
                wait = self._site_read_at + _SITE_PEERS_DELAY_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._site_read_at = loop.time()
                stale, self._stale_sites = self._stale_sites, {}
                here = [link for link in self._links.values() if link.site_id in stale]
                if not here:
                    continue
                try:
                    lists = await host_store.site_peer_lists(self._pool, sorted({lk.site_id for lk in here}))
                except errors.CloudseatError as exc:
                    log.warning("could not read the sites' peers", sites=sorted(stale), error=str(exc))
                    continue
                for link in here:
                    # The host that changed its site was told at its registration, unless another change came too.
                    if stale[link.site_id] != {link.host_id}:
                        link.send(commands.site_peers_command(lists.get(link.site_id, [])))
        finally:
            self._site_refresh = None

    def resync_hosts(self) -> None:
        """Host changes may have been missed: tell every agent linked here its host's drain and its site's list as
        they stand."""
        if self._links:
            self._chore(self._resend_drains(), "links-resync-drains")
            self.on_sites_change({"site_peers": sorted({link.site_id for link in self._links.values()})})

    async def _resend_drains(self) -> None:
        try:
            drained = await fleet_store.drained_of(self._pool, list(self._links))
        except errors.CloudseatError as exc:
            log.warning("could not re-read the hosts' drains", error=str(exc))
            return
        for host_id, value in drained.items():
            self.on_host_change({"host_id": host_id, "drained": value})

    # -- session changes -> commands --------------------------------------------------------------------------

    def on_change(self, change: Mapping[str, Any]) -> None:
        host_id = change.get("host_id")
        link = self._links.get(host_id) if host_id else None
        if link is None:
            return
        state = change["state"]
        if state == "PLACED":
            link.send(commands.start_command(change))
        elif state == "ENDED" and (
            change["end_reason"] not in lifecycle.AGENT_REASONS
            or change["end_reason"] == lifecycle.EndReason.HOST_DRAINED
        ):
            # The agent reported the reasons it gives itself; every other end needs telling. HOST_DRAINED is both:
            # the agent's when it shuts down, the broker's at a drain's deadline (broker.drain); a stop for a session
            # the agent already let go of is a no-op there.
            link.send(commands.stop_command(str(change["session_id"]), change["end_reason"]))

    # -- negotiation relay ------------------------------------------------------------------------------------

    async def negotiate(
        self, host_id: str, session_id: uuid.UUID, offer: common_pb2.SessionDescription, timeout_s: float
    ) -> common_pb2.SessionDescription:
        """Send the seat's offer to the agent holding the session; wait for its answer."""
        link = self._links.get(host_id)
        if link is None or link.closed.is_set():
            raise errors.Unavailable(
                f"session_id: the agent of host {host_id!r} is not connected; retry shortly"
            )
        correlation = uuid.uuid4().hex
        fut: asyncio.Future[common_pb2.SessionDescription] = asyncio.get_running_loop().create_future()
        link.negotiations[correlation] = fut
        try:
            link.send(commands.negotiate_command(correlation, str(session_id), offer))
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(
                f"the agent of host {host_id!r} did not answer the offer in time"
            ) from exc
        finally:
            link.negotiations.pop(correlation, None)
