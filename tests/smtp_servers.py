"""SMTP peers for the tests: a sink that stores what it receives, and a replay server.

The replay server answers like Microsoft 365 and Gmail do in cases Dovecot
cannot produce (SMTP AUTH disabled, Send As denied, a daily limit).
"""

from __future__ import annotations

import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        with self.sink.lock:
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 2.0.0 stored"


class SmtpSink:
    """An aiosmtpd server on loopback that keeps every message in memory."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: int) -> Received:
        return self.messages[index]


@dataclass
class ReplayScript:
    """What the replay server answers; None means the usual success."""

    auth: str | None = None
    mail: str | None = None
    data: list[str] = field(default_factory=list)  # answers to successive DATA ends
    delivered: list[bytes] = field(default_factory=list)


class _ReplayHandler(socketserver.StreamRequestHandler):
    server: _ReplayTCPServer

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        script = self.server.script
        self._send("220 replay.example.com ESMTP")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            command = raw.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._send("250-replay.example.com")
                self._send("250-AUTH XOAUTH2 PLAIN LOGIN")
                self._send("250 8BITMIME")
            elif verb == "AUTH":
                self._send(script.auth or "235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                self._send(script.mail or "250 2.1.0 Sender OK")
            elif verb == "RCPT":
                self._send("250 2.1.5 Recipient OK")
            elif verb == "DATA":
                self._send("354 Start mail input; end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    line = self.rfile.readline()
                    if line in (b".\r\n", b".\n", b""):
                        break
                    lines.append(line)
                answer = script.data.pop(0) if script.data else "250 2.0.0 OK queued"
                if answer.startswith("250"):
                    script.delivered.append(b"".join(lines))
                self._send(answer)
            elif verb == "RSET" or verb == "NOOP":
                self._send("250 2.0.0 OK")
            elif verb == "QUIT":
                self._send("221 2.0.0 Bye")
                return
            else:
                self._send("502 5.5.2 Command not recognized")


class _ReplayTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, context: ssl.SSLContext, script: ReplayScript) -> None:
        self.context = context
        self.script = script
        super().__init__(("127.0.0.1", port), _ReplayHandler)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


class ReplayServer:
    """An implicit-TLS SMTP server that replays scripted answers."""

    def __init__(self, port: int, cert: str, key: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.script = ReplayScript()
        self._server = _ReplayTCPServer(port, context, self.script)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, **answers: object) -> ReplayScript:
        self.script.__init__(**answers)  # type: ignore[misc]
        return self.script
