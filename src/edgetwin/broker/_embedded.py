"""The embedded amqtt broker behind a small interface.

amqtt descends from hbmqtt, which Home Assistant dropped for memory leaks;
keeping it behind :class:`EmbeddedBroker` lets a node swap it for any
external broker (``broker.embedded: false``) with nothing else changing.
Only the plugins we need are loaded: no ``$SYS`` topics and no packet
logging, which cost CPU on every message. Authentication, the ACL and rate
limits are the :class:`Gate`'s, called from amqtt's own hooks.

Since 0.11.2 amqtt disconnects any client that publishes to a topic starting
with ``$`` (its reading of MQTT-4.7.2-1, a SHOULD in the standard). KubeEdge's
twin API lives under ``$hw/``, and mosquitto and EMQX allow it, so
:class:`_KubeEdgeBroker` lets ``$hw/`` publications through amqtt's usual
path (events, topic ACL, broadcast, retain) and leaves every other topic to
amqtt. Two amqtt bugs are fixed on the way: a new client was sent the
retained messages of every filter any client had subscribed to, and a client
that reset its connection left its socket open.

amqtt trusts a client id and a Will more than mosquitto does: it resumes the
session saved under an id whoever connects with it, and publishes a Will past
the ACL. Here a session belongs to the user that created it, a refused
CONNECT touches no saved session, and a Will meets the ACL at CONNECT and again
when it goes out.

amqtt also breaks MQTT 3.1.1's promises to a client that comes back, kept
here (:class:`_Handler`): a QoS 1/2 message the client had not acknowledged
is sent again, DUP, when it resumes its session; what was queued while it was
away goes out as live messages (amqtt flags them RETAIN); a client silent for
1.5 keep-alives is disconnected, so its Will goes out. And each subscriber
gets a message at the lower of its QoS and the subscription's
(:class:`_Broadcast`).
Sessions live in the node's memory: a node restarted forgets them, where the
node's mosquitto saves them. amqtt is pinned to the version this was written
against.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Callable
from typing import Any, Self

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OUTGOING
from amqtt.utils import gen_client_id

from edgetwin.auth import Action as Access
from edgetwin.auth import Gate, Identity, Tally
from edgetwin.broker._local import LocalConnection
from edgetwin.config import DEFAULTS, AuthSettings, TlsListenerSettings
from edgetwin.errors import BrokerStartError
from edgetwin.logs import ThrottledLog, printable
from edgetwin.wire import topics
from edgetwin.wire.messages import Code, error_result

log = logging.getLogger(__name__)

KUBEEDGE_PREFIX = "$hw/"
KEEPALIVE_GRACE = 1.5
"""A client silent for this many keep-alives is gone (MQTT-3.1.2-24)."""
TLS_LISTENER = "tls"
HANDSHAKE_SECONDS = 10.0
_IDENTITY = "edgetwin_identity"  # the Session attribute holding the client's Identity
_OWNER = "edgetwin_owner"  # the Session attribute naming the user that created it


class _ClosingWriter(StreamWriterAdapter):  # type: ignore[misc]
    """amqtt's stream writer, whose close also closes the socket when the peer is gone.

    amqtt drains before closing; when the client has already reset the
    connection the drain raises and amqtt never closes the transport, which
    leaks the socket.
    """

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._writer.close()

    def abort(self) -> None:
        """Drop the connection now: the reader sees its end, as when the client goes."""
        self._writer.transport.abort()


class _Handler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's protocol handler, keeping two promises of MQTT 3.1.1 it breaks.

    - A QoS 1/2 message the client has not acknowledged stays in its session, to
      be sent again (DUP) when the client resumes it (MQTT-4.4.0-1). amqtt drops
      it from the session when the client goes, or after 5 s without an answer.
    - A client that sends nothing for 1.5 times its keep-alive is disconnected,
      as one that went away, so its Will goes out (MQTT-3.1.2-24). amqtt times
      the read out after one keep-alive and then waits on.
    """

    async def start(self) -> None:
        await super().start()  # sends the unacknowledged messages again, awaiting answers
        waiter = self._disconnect_waiter
        if self._reader_stopped.is_set() and waiter is not None and not waiter.done():
            # The client went meanwhile. amqtt makes the waiter for its going only after
            # the redelivery, so nothing would ever end the session: it would stay
            # "connected" for ever.
            waiter.set_result(None)

    async def _handle_message_flow(self, message: Any) -> None:  # noqa: ANN401 - amqtt's
        session = self.session
        if message.direction != OUTGOING or message.qos not in (QOS_1, QOS_2):
            await super()._handle_message_flow(message)
            return
        try:
            await super()._handle_message_flow(message)
        except TimeoutError:  # a slow client: kept, and sent again when it comes back
            _keep_unacknowledged(session, message)
        except BaseException:
            _keep_unacknowledged(session, message)
            raise

    def handle_read_timeout(self) -> None:
        session, writer = self.session, self.writer
        if session is None or writer is None:  # detached: the connection is gone already
            return
        _silent.write(
            str(session.client_id),
            "keepalive",
            "client %s sent nothing for %.0f s (1.5 keep-alives): disconnected",
            printable(str(session.client_id)),
            session.keep_alive,
        )
        writer.abort()


def _refused_by_amqtt(topic: str) -> bool:
    """A topic no client may publish to: a wildcard, or "$" but "$hw/"."""
    dollar = topic.startswith("$") and not topic.startswith(KUBEEDGE_PREFIX)
    return dollar or "+" in topic or "#" in topic


class _Broadcast(dict[str, Any]):
    """An entry of amqtt's broadcast queue, delivered to each subscriber at the lower of
    the publication's QoS and the subscription's (MQTT-3.8.4-6).

    amqtt's broadcast loop asks each entry ``get("qos", subscription_qos)`` per
    subscriber and sends at the answer: the subscription's QoS when the entry has
    none (a QoS 1 publication reached a QoS 2 subscriber at QoS 2), the entry's for
    every subscriber when it has one (the twin's QoS 1 deltas reached QoS 0
    subscribers at QoS 1, and were queued for them while they were away).
    """

    def get(self, key: str, default: Any = None) -> Any:  # noqa: ANN401 - dict's
        if key == "qos" and default is not None and "qos" in self:
            return min(self["qos"], default)
        return super().get(key, default)


def _keep_unacknowledged(session: Any, message: Any) -> None:  # noqa: ANN401 - amqtt's
    """Put a message the client has not acknowledged back in its session (amqtt took it
    out): a QoS 1 one without PUBACK, a QoS 2 one without PUBCOMP."""
    done = message.puback_packet if message.qos == QOS_1 else message.pubcomp_packet
    if session is not None and done is None and message.packet_id is not None:
        session.inflight_out[message.packet_id] = message


_silent = ThrottledLog(log)


class _SizeLimitedReader(StreamReaderAdapter):  # type: ignore[misc]
    """amqtt's stream reader, ending the connection at a fixed header announcing too much.

    amqtt reads whatever remaining length a client announces (up to 256 MB),
    before the client has even authenticated. It reads each fixed header a
    byte at a time and then exactly the packet's body, so following its reads
    finds every packet's length before the body is read. An oversize packet
    reads as the end of the stream, which closes the connection.
    """

    def __init__(
        self, reader: asyncio.StreamReader, limit: int, too_large: Callable[[int], None]
    ) -> None:
        super().__init__(reader)
        self._limit = limit
        self._too_large = too_large
        self._header = bytearray()
        self._body_left = 0
        self._ended = False

    async def read(self, n: int = -1) -> bytes:
        if self._ended:
            raise asyncio.IncompleteReadError(b"", None)
        data: bytes = await super().read(n)
        if self._body_left:
            self._body_left -= len(data)
            return data
        self._header += data
        if len(self._header) >= 2 and not self._header[-1] & 0x80:  # the last length byte
            length = sum((b & 0x7F) << (7 * i) for i, b in enumerate(self._header[1:]))
            self._header.clear()
            if length > self._limit:
                self._ended = True
                self._too_large(length)
                raise asyncio.IncompleteReadError(b"", None)
            self._body_left = length
        return data


class _KubeEdgeBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, allowing client publications under ``$hw/``, with in-process links."""

    def __init__(
        self,
        config: dict[str, Any],
        gate: Gate,
        tls: ssl.SSLContext | None,
        max_packet_bytes: int,
    ) -> None:
        super().__init__(config)
        self._links: list[LocalConnection] = []
        self.gate = gate
        self._tls = tls
        self._max_packet_bytes = max_packet_bytes

    # --- the gate in amqtt's hooks ------------------------------------------------------------

    async def _initialize_client_session(
        self,
        reader: Any,  # noqa: ANN401 - amqtt's adapters
        writer: Any,  # noqa: ANN401
        _remote_address: str,
        _remote_port: int,
    ) -> tuple[Any, Any]:
        """amqtt's, deciding who the client is before any saved session is touched.

        amqtt resumes (or, on a clean start, deletes) the session saved under a client
        id whoever connects with it, so another user could read a device's queued
        deltas, or wipe them. Here a session belongs to the user that created it: a
        CONNECT with a client id whose session is another user's is refused as not
        authorized (counted as ``client_id_taken``), and a refused CONNECT of any kind
        leaves every saved session as it was.
        """
        try:
            handler, session = await _Handler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        identity = self.gate.authenticate(
            session.username, session.password, _certificate_name(writer), session.client_id
        )
        held = self._sessions.get(session.client_id) if session.client_id else None
        if identity is not None and held is not None and _owner(held[0]) != identity.user:
            self.gate.tally.refuse(session.client_id, "client_id_taken", identity.user)
            identity = None
        if identity is not None and session.will_flag and not self._will_allowed(session, identity):
            # A Will the client could not publish itself refuses the CONNECT, so the client
            # learns it at once (mosquitto 2.0 accepts it and drops the Will when it goes out).
            identity = None
        if identity is None:  # refused: under an id of its own, so amqtt replaces no session
            session.client_id, session.clean_session, session.parent = gen_client_id(), True, 0
            return handler, session
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif held is not None:  # resumed, with this CONNECT's Will, keep-alive and credentials
            saved = held[0]
            for field in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain"):
                setattr(saved, field, getattr(session, field))
            saved.keep_alive, saved.username, saved.password = (
                session.keep_alive,
                session.username,
                session.password,
            )
            session, session.parent = saved, 1
        else:
            session.parent = 0
        # The read times out (and the client goes) after 1.5 keep-alives (MQTT-3.1.2-24).
        session.keep_alive = session.keep_alive * KEEPALIVE_GRACE
        setattr(session, _IDENTITY, identity)
        setattr(session, _OWNER, identity.user)
        return handler, session

    async def _handle_client_session(  # noqa: PLR0917 - amqtt's signature
        self,
        reader: Any,  # noqa: ANN401 - amqtt's adapters
        writer: Any,  # noqa: ANN401
        client_session: Any,  # noqa: ANN401 - amqtt's Session
        handler: Any,  # noqa: ANN401
        server: Any,  # noqa: ANN401
        listener_name: str,
    ) -> None:
        try:
            await super()._handle_client_session(
                reader, writer, client_session, handler, server, listener_name
            )
        finally:  # amqtt keeps a refused client's session, "connected", for ever
            if getattr(client_session, _IDENTITY, None) is None:
                self._sessions.pop(client_session.client_id, None)

    def _will_allowed(self, session: Any, identity: Identity) -> bool:  # noqa: ANN401
        """Whether the client's Will passes what a live publication of it would meet: no
        ``$`` topic but ``$hw/`` (amqtt disconnects a client publishing there), and the ACL."""
        topic = str(session.will_topic or "")
        if topic.startswith("$") and not topic.startswith(KUBEEDGE_PREFIX):
            return False
        return self.gate.will_allowed(identity, topic, session.client_id)

    async def _handle_disconnect(
        self,
        client_session: Any,  # noqa: ANN401 - amqtt's Session
        handler: Any,  # noqa: ANN401
        disconnect_waiter: asyncio.Future[Any],
    ) -> None:
        # amqtt publishes the Will of a client gone without DISCONNECT straight to the
        # subscribers (and the twin), past the ACL: check it again here, since the client's
        # rights can have changed since it connected (a device that moved to another
        # protocol leaves its mapper's rules). One Will a connection needs no rate.
        identity: Identity | None = getattr(client_session, _IDENTITY, None)
        goes_out = client_session.will_flag and not isinstance(
            disconnect_waiter.result(), DisconnectPacket
        )
        if goes_out and (identity is None or not self._will_allowed(client_session, identity)):
            client_session.will_flag = False
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _authenticate(self, session: Any, _listener: Any) -> bool:  # noqa: ANN401
        return getattr(session, _IDENTITY, None) is not None

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:  # noqa: ANN401
        identity: Identity | None = getattr(session, _IDENTITY, None)
        if identity is None:
            return False
        return self.gate.allows(identity, Access(action.value), topic, session.client_id)

    def connected_clients(self) -> int:
        return sum(1 for s, _ in self._sessions.values() if s.transitions.state == "connected")

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername", ("?", 0))[:2])
        limit = self._max_packet_bytes
        bounded = _SizeLimitedReader(
            reader, limit, lambda size: self.gate.tally.packet_too_large(peer, size, limit)
        )
        try:
            if listener_name == TLS_LISTENER and not await self._handshake(writer, peer):
                return
            await self._client_connected(listener_name, bounded, _ClosingWriter(writer))
        finally:  # amqtt leaves the socket open when the first packet is not a good CONNECT
            writer.close()

    async def _handshake(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        """TLS on the TLS listener's plain socket, here rather than in asyncio's server,
        which drops failed handshakes silently: a refused certificate is logged and counted."""
        assert self._tls is not None
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=HANDSHAKE_SECONDS)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            # "certificate has expired", "PEER_DID_NOT_RETURN_A_CERTIFICATE", "TimeoutError"
            why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
            reason = why or type(exc).__name__
            self.gate.tally.refuse(peer, "tls_handshake", reason)
            return False
        return True

    async def _publish_session_retained_messages(self, session: Any) -> None:  # noqa: ANN401
        """What was queued for a session while its client was away, in order.

        The messages passed the receive check with the client's rights then; they go
        out only if they pass it with its rights now, as live ones. They go out as
        live messages too: amqtt sends them flagged RETAIN, which they are not.
        """
        handler = self._get_handler(session)
        queue = session.retained_messages
        queued = [queue.get_nowait() for _ in range(queue.qsize())]
        sending = [
            asyncio.ensure_future(handler.mqtt_publish(m.topic, m.data, m.qos, retain=False))
            for m in queued
            if handler is not None and await self._topic_filtering(session, m.topic, Action.RECEIVE)
        ]
        if sending:
            await asyncio.wait(sending)

    async def _publish_retained_messages_for_subscription(
        self,
        subscription: tuple[str, int],
        session: Any,  # noqa: ANN401 - amqtt's Session
    ) -> None:
        # On connect amqtt offers a client the retained messages of every filter anyone has
        # subscribed to; only the client's own subscriptions should get them.
        # Each retained message also passes the ACL, as any other delivery does.
        subscribers = self._subscriptions.get(subscription[0], [])
        handler = self._get_handler(session)
        if handler is None or all(s.client_id != session.client_id for s, _ in subscribers):
            return
        topic_filter, qos = subscription
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                session, topic, Action.RECEIVE
            ):
                await handler.mqtt_publish(
                    topic, retained.data, min(qos, retained.qos or qos), retain=True
                )

    # --- the LocalBroker protocol -----------------------------------------------------------

    def attach(self, link: LocalConnection) -> None:
        self._links.append(link)

    def detach(self, link: LocalConnection) -> None:
        if link in self._links:
            self._links.remove(link)

    def matches(self, topic: str, topic_filter: str) -> bool:
        return bool(self._matches(topic, topic_filter))

    async def broadcast(self, topic: str, payload: bytes, qos: int) -> None:
        await self.internal_message_broadcast(topic, payload, qos)

    async def retain(self, topic: str, payload: bytes, qos: int) -> None:
        await self.retain_message(None, topic, payload, qos)

    async def _broadcast_message(
        self,
        session: Any,  # noqa: ANN401 - amqtt's Session
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        """Into amqtt's broadcast queue; ``force_qos`` is the publication's QoS, and each
        subscriber gets the lower of it and its subscription's (:class:`_Broadcast`)."""
        # Client publications (session set; ACL already passed) also go to the local links.
        if session is not None and topic:
            for link in self._links:
                if link.wants(topic):
                    link.deliver(topic, bytes(data or b""))
        broadcast = _Broadcast(session=session, topic=topic, data=data)
        if force_qos is not None:
            broadcast["qos"] = force_qos
        await self._broadcast_queue.put(broadcast)

    async def _handle_message_delivery(  # amqtt's own signature, untyped there
        self,
        client_session: Any,  # noqa: ANN401
        handler: Any,  # noqa: ANN401
        wait_deliver: Any,  # noqa: ANN401
    ) -> bool:
        message = wait_deliver.result()
        topic = getattr(message, "topic", None)
        identity = getattr(client_session, _IDENTITY, None)
        if topic and not self.gate.admit(identity, client_session.client_id):
            if self.gate.tell(client_session.client_id):
                await self._refuse_over_rate(topic)
            return True
        # amqtt's own path (which disconnects a client publishing to a "$" topic) only for
        # what it refuses; the rest goes this way, which is amqtt's but for "$hw/" and the
        # publication's QoS handed to the broadcast.
        if not topic or _refused_by_amqtt(topic):
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        client_id = client_session.client_id
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_id, message=message
        )
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_id, message=message
        )
        await self._broadcast_message(client_session, topic, message.data, message.qos)
        if message.publish_packet and message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)
        return True

    async def _refuse_over_rate(self, topic: str) -> None:
        """A twin request over the sender's rate gets an error result, as any refused request."""
        request = topics.parse_request_topic(topic)
        if request is not None:
            reason = "over this client's message rate; slow down"
            result = error_result("", Code.TOO_MANY_REQUESTS, reason)
            await self.internal_message_broadcast(request.result_topic, result, 0)


def _server_context(tls: TlsListenerSettings) -> ssl.SSLContext:
    """The TLS listener's context: client certificates verified when sent, or required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_file)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def _owner(session: Any) -> str | None:  # noqa: ANN401 - amqtt's Session
    return getattr(session, _OWNER, None)


def _certificate_name(writer: Any) -> str | None:  # noqa: ANN401 - amqtt's writer adapter
    """The CN of the client's verified certificate, if it sent one."""
    stream = getattr(writer, "_writer", None)
    cert = stream.get_extra_info("peercert") if stream is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class EmbeddedBroker:
    """``async with EmbeddedBroker(host, port) as broker``; port 0 picks a free port.

    With ``auth`` naming a password file (or a TLS listener that requires
    client certificates) anonymous clients are refused and the ACL applies;
    ``protocol_of`` tells it each device's protocol, for the mappers' rules.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        auth: AuthSettings | None = None,
        tls: TlsListenerSettings | None = None,
        protocol_of: Callable[[str], str | None] = lambda _device: None,
        max_messages_per_second: float = DEFAULTS.broker.max_messages_per_second,
        max_packet_bytes: int = DEFAULTS.broker.max_packet_bytes,
    ) -> None:
        self.host = host
        self._max_packet_bytes = max_packet_bytes
        self._requested_port = port
        self._tls = tls
        self.gate = Gate(
            auth or AuthSettings(),
            protocol_of,
            client_certs=tls is not None and tls.require_client_cert,
            max_messages_per_second=max_messages_per_second,
        )
        self._broker: _KubeEdgeBroker | None = None
        self.port = port
        self.tls_port: int | None = None

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"}
        }
        if self._tls is not None:  # plain TCP to amqtt; the broker does the handshake
            listeners[TLS_LISTENER] = {"type": "tcp", "bind": f"{self._tls.host}:{self._tls.port}"}
        return {"listeners": listeners, "plugins": {}}

    async def __aenter__(self) -> Self:
        amqtt_log = logging.getLogger("amqtt")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)  # amqtt logs a traceback for a busy port
        try:
            context = _server_context(self._tls) if self._tls is not None else None
            broker = _KubeEdgeBroker(self._config(), self.gate, context, self._max_packet_bytes)
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise BrokerStartError(
                    f"cannot listen on {self.host}:{self._requested_port}: the port is in use"
                ) from None
            raise BrokerStartError(f"the embedded broker cannot start: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise BrokerStartError(f"the embedded broker cannot start: {exc}") from None
        finally:
            amqtt_log.setLevel(level)
        self._broker = broker
        self.port = _bound_port(broker, "default")
        if self._tls is not None:
            self.tls_port = _bound_port(broker, TLS_LISTENER)
        log.info(
            "embedded MQTT broker listening on %s:%d%s%s",
            self.host,
            self.port,
            f", TLS on {self._tls.host}:{self.tls_port}" if self._tls else "",
            ", authentication and ACL on" if self.gate.enabled else "",
        )
        log.info(
            "embedded amqtt keeps MQTT sessions in memory: clients' sessions and the "
            "messages queued for them are lost if the node restarts (mosquitto saves them)"
        )
        return self

    def internal_user(self, identity: Identity) -> tuple[str, str] | None:
        """Credentials for a client of this process (a mapper), or None without auth."""
        return self.gate.internal_user(identity) if self.gate.enabled else None

    @property
    def tally(self) -> Tally:
        return self.gate.tally

    def connected_clients(self) -> int:
        return self._broker.connected_clients() if self._broker else 0

    def local_connection(self) -> LocalConnection:
        """An in-process link for a twin running in the broker's own process."""
        if self._broker is None:
            raise BrokerStartError("the embedded broker is not running")
        return LocalConnection(self._broker, f"{self.host}:{self.port} (in-process)")

    async def __aexit__(self, *exc_info: object) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            log.info("embedded MQTT broker stopped")


def _bound_port(broker: _KubeEdgeBroker, listener: str) -> int:
    server = broker._servers[listener].instance  # noqa: SLF001 - the bound port for port 0
    return int(server.sockets[0].getsockname()[1])
