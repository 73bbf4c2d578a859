"""One replica of a cluster: joins the Redis registry, relay and nonce ledger to the running daemon."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from patterd.cluster.media_gate import MediaGate
from patterd.cluster.redis_link import RedisLink, RedisNonces, connect
from patterd.cluster.registry import LiveRegistry
from patterd.cluster.relay import Relay
from patterd.cluster.tokens import CallClaim
from patterd.errors import CallError, PatterdError
from patterd.protocols.events import CallEnded, CallEvent, CallStarted

if TYPE_CHECKING:
    from patterd.calls.switchboard import Switchboard
    from patterd.config.cluster import ClusterConfig

log = structlog.get_logger("patterd.cluster")
CLOSE_STEP_SECS = 3.0  # each step of leaving the cluster at stop, at most
STOP_RECANCEL_SECS = 0.1  # a task still running this long after its cancel is cancelled again
CONTROL_TIMEOUT_SECS = 5.0  # a live replica that does not answer a hangup/transfer this fast is skipped


def replica_name(config: ClusterConfig) -> str:
    """`cluster.replica_id`, else $PATTERD_REPLICA_ID, else host name + pid + a random tail (unique per start)."""
    chosen = config.replica_id or os.environ.get("PATTERD_REPLICA_ID", "").strip()
    return chosen or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_gate(config: ClusterConfig, replica: str) -> MediaGate:
    """The media gate of this process under the cluster secret (or a random one when there is none)."""
    secret = config.secret.get_secret_value() if config.secret is not None else None
    return MediaGate.from_secret(secret, replica=replica)


class Feed(Protocol):
    forward: Callable[[str, dict[str, Any]], None] | None

    def publish(self, name: str, data: dict[str, Any]) -> None: ...

    def observe(self, event: CallEvent) -> None: ...


class ClusterNode:
    """This replica's share of the cluster's live state: calls, feed, control and used tokens in Redis."""

    def __init__(
        self, config: ClusterConfig, gate: MediaGate, *, clock: Callable[[], float] = time.time
    ) -> None:
        assert config.redis is not None
        self.config = config
        self.replica = gate.replica
        self.link = RedisLink(connect(config.redis), prefix=config.key_prefix, replica=gate.replica)
        self.registry = LiveRegistry(
            self.link,
            heartbeat_secs=config.heartbeat_secs,
            timeout_secs=config.replica_timeout_secs,
            clock=clock,
        )
        self.relay = Relay(self.link, on_feed=self._remote_feed, on_control=self._control)
        gate.nonces = RedisNonces(self.link, clock)
        gate.on_adopted = self._adopted
        self.gate = gate
        self._board: Switchboard | None = None
        self._emit: Callable[[CallEvent], None] = lambda event: None
        self._known: Callable[[str], bool] = lambda call_id: False
        self._recover: Callable[[list[str]], int] | None = None
        self._forget: Callable[[str], None] | None = None
        self._feed: Feed | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        board: Switchboard,
        *,
        emit: Callable[[CallEvent], None],
        feed: Feed,
        known_record: Callable[[str], bool],
        recover_orphans: Callable[[list[str]], int] | None = None,
        forget_record: Callable[[str], None] | None = None,
    ) -> None:
        """Join: heartbeat, registry writer, feed publisher and subscriber run until `close`."""
        self._board, self._emit, self._feed, self._known = board, emit, feed, known_record
        # a store shared by every replica (PostgreSQL) closes a dead replica's record itself
        self._recover = recover_orphans
        self._forget = forget_record  # a handed-over call's record is written by the replica running it
        feed.forward = self.relay.publish_feed
        await self.registry.heartbeat()
        loop = asyncio.get_running_loop()
        for work in (
            self.registry.run_writer(),
            self.relay.run_publisher(),
            self.relay.run_subscriber(),
            self._beat(),
        ):
            self._tasks.append(loop.create_task(work))
        log.info("joined the cluster", replica=self.replica, redis=self.link.healthy)

    async def close(self) -> None:
        """Leave the registry (the calls are over by now) and stop every task."""
        if self._feed is not None:
            self._feed.forward = None
        for task in self._tasks:
            task.cancel()
        # A stop must never wait on Redis: each step is bounded (a stuck connection is left to the exit).
        for name, step in (
            ("leave", self.registry.leave()),
            ("tasks", self._stop_tasks()),
            ("relay", self.relay.close()),
            ("client", self.link.client.aclose()),
        ):
            try:
                async with asyncio.timeout(CLOSE_STEP_SECS):
                    await step
            except Exception as exc:  # TimeoutError or a Redis error: logged, the stop goes on
                log.warning(
                    "cluster close step did not finish", step=name, error=f"{type(exc).__name__}: {exc}"
                )

    async def _stop_tasks(self) -> None:
        """Cancel the tasks until they have ended.

        The writer and the publisher were seen running on after one cancel (tests/e2e/test_replicas.py:
        a cancel landing while a Redis command is in flight seems to come out as an error, which their loops
        take for an outage), so every stop after calls waited out CLOSE_STEP_SECS.
        """
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=STOP_RECANCEL_SECS)

    async def _beat(self) -> None:
        reaping: asyncio.Task[int] | None = None
        try:
            while True:
                await asyncio.sleep(self.config.heartbeat_secs)
                if self._board is not None:  # an outbound call learns its carrier id after the dial returns
                    for call_id, session in list(self._board.calls.items()):
                        if session.spec.carrier_call_id:
                            self.registry.set_carrier_call_id(call_id, session.spec.carrier_call_id)
                await self.registry.heartbeat()
                # Reaping writes a record per call (seconds on a busy database): it runs beside the beat, or
                # this replica's own heartbeat would lapse meanwhile and the others would reap it in turn.
                if reaping is None or reaping.done():
                    reaping = asyncio.get_running_loop().create_task(
                        self.registry.reap_dead(self._end_dead_call)
                    )
        finally:
            if reaping is not None:
                reaping.cancel()

    # ------------------------------------------------------------------ observers

    def observe(self, event: CallEvent) -> None:
        """Call-event observer (after the store): the registry mirrors this replica's calls."""
        self.registry.observe(event)

    def _remote_feed(self, origin: str, name: str, data: dict[str, Any]) -> None:
        if self._feed is not None:
            self._feed.publish(name, {**data, "replica": origin})

    # ------------------------------------------------------------------ views

    async def status(self) -> dict[str, Any]:
        """For /api/v1/status: who we are, which replicas live, and how Redis is doing."""
        return {
            "replica": self.replica,
            "replicas": await self.registry.alive(),
            "redis": "ok" if self.link.healthy else "unavailable",
            "redis_errors": self.link.errors,
            "feed_dropped": self.relay.dropped,
            "reaped_calls": self.registry.reaped,
        }

    async def remote_calls(self) -> list[dict[str, Any]]:
        """Every other live replica's live calls, as /api/v1/status lists them."""
        rows = await self.registry.remote_calls()
        keys = ("call_id", "agent", "state", "status", "direction", "carrier", "replica")
        return [{k: row.get(k, "") for k in keys} for row in rows]

    # ------------------------------------------------------------------ control

    async def control(
        self, call_id: str, action: str, to: str | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """Hang up or transfer a call live on another replica: (HTTP code, body), or None if no replica has it.

        The replica holding it acts; when it is gone (or silent) the carrier's REST API does.
        """
        entry = await self.registry.lookup(call_id)
        if entry is None or entry.get("replica") == self.replica:
            return None
        replica = entry.get("replica", "")
        if await self.registry.is_alive(replica):
            reply = await self.relay.request(
                replica, {"action": action, "call_id": call_id, "to": to}, CONTROL_TIMEOUT_SECS
            )
            if reply is not None:
                code = int(reply.get("code", 502))
                return code, {k: v for k, v in reply.items() if k not in ("id", "ok", "code")}
        return await self._through_carrier(entry, action, to)

    async def _through_carrier(
        self, entry: dict[str, str], action: str, to: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The replica holding the call is gone: ask its carrier directly (by the carrier's call id)."""
        board, call_id = self._board, entry.get("call_id", "")
        carrier_call_id = entry.get("carrier_call_id", "")
        if board is None or not carrier_call_id:
            return 409, {
                "error": {"code": "conflict", "message": f"call {call_id!r} has no carrier id to act on"}
            }
        carrier = board.graph.carriers.get(entry.get("carrier", ""), board.graph.carrier)
        try:
            if action == "hangup":
                await carrier.hangup(carrier_call_id)
                return 202, {"call_id": call_id, "status": "ending", "via": "carrier"}
            await carrier.transfer(carrier_call_id, to or "")
            return 202, {"call_id": call_id, "status": "transferring", "to": to, "via": "carrier"}
        except CallError as exc:
            return 409, {"error": {"code": "conflict", "message": str(exc)}}
        except PatterdError as exc:
            return 502, {"error": {"code": "bad_gateway", "message": str(exc)}}

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request from another replica about a call of this one."""
        board, action = self._board, request.get("action")
        call_id = str(request.get("call_id", ""))
        if board is None:
            return {"code": 503, "error": {"code": "unavailable", "message": "starting"}}
        if action == "adopted":
            self.registry.forget(call_id)
            handed = board.hand_over(call_id)
            if handed and self._forget is not None:
                self._forget(call_id)
            return {"code": 200, "handed_over": handed}
        if call_id not in board.calls:
            return {"code": 404, "error": {"code": "not_found", "message": f"no live call {call_id!r}"}}
        try:
            if action == "hangup":
                await board.hangup(call_id)
                return {"code": 202, "call_id": call_id, "status": "ending", "replica": self.replica}
            if action == "transfer":
                to = str(request.get("to") or "")
                await board.transfer(call_id, to)
                return {
                    "code": 202,
                    "call_id": call_id,
                    "status": "transferring",
                    "to": to,
                    "replica": self.replica,
                }
        except CallError as exc:
            return {"code": 409, "error": {"code": "conflict", "message": str(exc)}}
        except PatterdError as exc:
            return {"code": 502, "error": {"code": "bad_gateway", "message": str(exc)}}
        return {"code": 400, "error": {"code": "bad_request", "message": f"unknown action {action!r}"}}

    async def _adopted(self, claim: CallClaim) -> None:
        """This replica opened a call another one answered: that one forgets its ringing copy."""
        await self.relay.request(
            claim.origin, {"action": "adopted", "call_id": claim.call_id}, CONTROL_TIMEOUT_SECS
        )

    # ------------------------------------------------------------------ dead replicas

    async def _end_dead_call(self, entry: dict[str, str]) -> None:
        """A dead replica's call ends `failed` in the record store (once: the registry holds the lock)."""
        call_id, now = entry["call_id"], datetime.now(UTC)
        try:
            started = datetime.fromisoformat(entry.get("started_at", "").replace("Z", "+00:00"))
        except ValueError:
            started = now
        replica = entry.get("replica", "?")
        ended = CallEnded(
            call_id=call_id,
            ts=now,
            status="failed",
            reason=f"replica {replica} stopped answering",
            error=f"replica {replica} died during the call",
            duration_ms=max(0, int((now - started).total_seconds() * 1000)),
        )
        if self._recover is not None:  # the shared record is closed in place, like a crash found at start
            await asyncio.to_thread(self._recover, [call_id])
            if self._feed is not None:
                self._feed.observe(ended)  # the live views hear of it; the record is already final
            log.warning("call of a dead replica ended failed", call_id=call_id, replica=replica)
            return
        if not self._known(call_id):  # this replica's store has no record of it (stores on separate disks)
            self._emit(
                CallStarted(
                    call_id=call_id,
                    ts=started,
                    direction="outbound" if entry.get("direction") == "outbound" else "inbound",
                    agent=entry.get("agent", ""),
                    carrier=entry.get("carrier", ""),
                    carrier_call_id=entry.get("carrier_call_id", ""),
                )
            )
        self._emit(ended)
        log.warning("call of a dead replica ended failed", call_id=call_id, replica=replica)


def join_cluster(config: ClusterConfig) -> tuple[MediaGate, ClusterNode | None]:
    """This process's media gate, and its cluster node when `cluster.redis` is set (joined by `start`)."""
    gate = build_gate(config, replica_name(config))
    return gate, ClusterNode(config, gate) if config.redis else None
