"""FleetService: providers, sites, games, prices, and the provider's view and control of its hosts.

A drain or undrain is a change in the database; its trigger tells every replica (broker.hub), and the one holding the
host's agent link sends the agent the command (broker.agents), whichever replica served the call. A drain's deadline
is kept there too and enforced by the placement leader (broker.drain).
"""

from __future__ import annotations

import asyncpg
import structlog
from cloudseat import errors
from cloudseat import validate as v
from cloudseat.v1 import fleet_pb2, fleet_pb2_grpc
from grpc import aio

from broker import auth, drain
from broker.rpc import convert
from broker.store import fleet as fleet_store
from broker.store import games as game_store

log = structlog.get_logger(__name__)


class FleetService(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def CreateProvider(
        self, request: fleet_pb2.CreateProviderRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Provider:
        provider_id = v.ident(request.provider_id, "provider_id")
        name = v.text(request.name, "name", required=True)
        auth.caller().require_operator("provider_id")
        return convert.provider(await fleet_store.create_provider(self._pool, provider_id, name))

    async def CreateSite(
        self, request: fleet_pb2.CreateSiteRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Site:
        site_id = v.ident(request.site_id, "site_id")
        provider_id = v.ident(request.provider_id, "provider_id")
        name = v.text(request.name, "name", required=True)
        region = v.text(request.region, "region", max_len=64)
        auth.caller().require_provider(provider_id)
        return convert.site(await fleet_store.create_site(self._pool, site_id, provider_id, name, region))

    async def PutGame(
        self, request: fleet_pb2.PutGameRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Game:
        game_id = v.ident(request.game_id, "game_id")
        name = v.text(request.name, "name", required=True)
        size = v.int_range(request.image_size_bytes, "image_size_bytes", 0, 2**63 - 1)
        version = v.ident(request.version, "version", required=False)
        image_ref, digest = v.registry_image(request.image_ref, request.image_digest, "image_ref")
        update = v.int_range(request.update_bytes, "update_bytes", 0, 2**63 - 1)
        lacking = convert.lacking_from(request.lacking_from)
        auth.caller().require_operator("game_id")
        row, recorded = await game_store.put_game(
            self._pool, game_id, name, size, version, (image_ref, digest, update), lacking
        )
        return convert.game(row, recorded)

    async def PrewarmGame(
        self, request: fleet_pb2.PrewarmGameRequest, context: aio.ServicerContext
    ) -> fleet_pb2.PrewarmGameResponse:
        site_id = v.ident(request.site_id, "site_id")
        game_id = v.ident(request.game_id, "game_id")
        await self._own_site(site_id)
        version, host_ids = await game_store.prewarm(self._pool, site_id, game_id)
        log.info("game pre-warm", site_id=site_id, game_id=game_id, version=version, hosts=len(host_ids))
        return fleet_pb2.PrewarmGameResponse(version=version, host_ids=host_ids)

    async def SetPrice(
        self, request: fleet_pb2.SetPriceRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Price:
        site_id = v.ident(request.site_id, "site_id")
        gpu_class = v.ident(request.gpu_class, "gpu_class")
        price = convert.price_micros(request.price_micros_per_slot_hour, "price_micros_per_slot_hour")
        bands = convert.price_bands(request)
        currency = v.currency(request.currency)
        await self._own_site(site_id)
        row = await fleet_store.set_price(
            self._pool, site_id, gpu_class, price, bands, request.utc_offset_minutes, currency
        )
        return convert.price(row)

    async def GetHost(
        self, request: fleet_pb2.GetHostRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Host:
        host_id = v.ident(request.host_id, "host_id")
        await self._own_host(host_id)
        return convert.host(await fleet_store.get_host(self._pool, host_id))

    async def ListHosts(
        self, request: fleet_pb2.ListHostsRequest, context: aio.ServicerContext
    ) -> fleet_pb2.ListHostsResponse:
        provider_id = v.ident(request.provider_id, "provider_id", required=False) or None
        site_id = v.ident(request.site_id, "site_id", required=False) or None
        caller = auth.caller()
        if not (caller.trusted or caller.role is auth.Role.OPERATOR):
            # A provider sees its own hosts only, whatever it asked for.
            caller.require_provider(provider_id or caller.provider_id)
            provider_id = caller.provider_id
        rows = await fleet_store.list_hosts(self._pool, provider_id, site_id)
        return fleet_pb2.ListHostsResponse(hosts=[convert.host(r) for r in rows])

    async def DrainHost(
        self, request: fleet_pb2.DrainHostRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Host:
        host_id = v.ident(request.host_id, "host_id")
        reason = v.text(request.reason, "reason")
        deadline_s = drain.deadline_s(request.deadline_s)
        await self._own_host(host_id)
        row = await fleet_store.set_drained(self._pool, host_id, True, reason, deadline_s)
        log.info("host drained", host_id=host_id, reason=reason, deadline_s=deadline_s)
        return convert.host(row)

    async def UndrainHost(
        self, request: fleet_pb2.UndrainHostRequest, context: aio.ServicerContext
    ) -> fleet_pb2.Host:
        host_id = v.ident(request.host_id, "host_id")
        await self._own_host(host_id)
        row = await fleet_store.set_drained(self._pool, host_id, False)
        return convert.host(row)

    async def EnrolHosts(
        self, request: fleet_pb2.EnrolHostsRequest, context: aio.ServicerContext
    ) -> fleet_pb2.EnrolHostsResponse:
        site_id = v.ident(request.site_id, "site_id")
        gpu_class = v.ident(request.gpu_class, "gpu_class", required=False)
        host_ids, prefix = _enrolled_hosts(request)
        provider_id = await self._own_site(site_id)
        await fleet_store.enrol_hosts(self._pool, provider_id, site_id, gpu_class, host_ids, prefix)
        log.info("hosts enrolled", site_id=site_id, hosts=len(host_ids), host_prefix=prefix)
        return fleet_pb2.EnrolHostsResponse(
            site_id=site_id,
            provider_id=provider_id,
            gpu_class=gpu_class,
            host_ids=host_ids,
            host_prefix=prefix,
        )

    async def _own_site(self, site_id: str) -> str:
        """The site's provider, when the caller may act for it; an unknown site, or another's, is NotFound."""
        caller = auth.caller()
        owner = await fleet_store.site_provider(self._pool, site_id)
        caller.require_owner(owner, "site_id", "site", site_id)
        return owner

    async def _own_host(self, host_id: str) -> None:
        caller = auth.caller()
        if not (caller.trusted or caller.role is auth.Role.OPERATOR):
            owner = await fleet_store.host_provider(self._pool, host_id)
            caller.require_owner(owner, "host_id", "host", host_id)


# One call enrols a site's whole fleet by id; beyond this, a prefix (one row for any number of hosts).
MAX_ENROL_IDS = 10_000


def _enrolled_hosts(request: fleet_pb2.EnrolHostsRequest) -> tuple[list[str], str]:
    """(host ids, '') or ([], prefix): exactly one of them, each checked."""
    if bool(request.host_ids) == bool(request.host_prefix):
        raise errors.InvalidArgument("host_ids", "give either host_ids or host_prefix, not both nor neither")
    if request.host_prefix:
        prefix = v.ident(request.host_prefix, "host_prefix")
        if len(prefix) < 3:
            raise errors.InvalidArgument("host_prefix", "must be at least 3 characters")
        return [], prefix
    if len(request.host_ids) > MAX_ENROL_IDS:
        raise errors.InvalidArgument(
            "host_ids", f"at most {MAX_ENROL_IDS} per call; a prefix enrols any number"
        )
    ids = [v.ident(h, f"host_ids[{i}]") for i, h in enumerate(request.host_ids)]
    return list(dict.fromkeys(ids)), ""
