"""An SMTP sink for the demo: prints each message it receives and keeps nothing."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


class _PrintingHandler:
    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        message = message_from_bytes(envelope.content, policy=policy.default)
        print(
            f"[demo mail] to {', '.join(envelope.rcpt_tos)}: {message.get('Subject', '')}",
            flush=True,
        )
        return "250 2.0.0 delivered to the demo sink"


class PrintingSink:
    def __init__(self, port: int = 0) -> None:
        if port == 0:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self._controller = Controller(_PrintingHandler(), hostname="127.0.0.1", port=port)

    def start(self) -> PrintingSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
