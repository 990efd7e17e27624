"""Invitation and reset links by email, when ``[console] smtp_host`` is set.

The standard library's SMTP client runs in a thread with a timeout: a slow mail server delays
only the mail, never the event loop.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from callrouter.config import ConfigError, ConsoleConfig

SECURITY = ("starttls", "tls", "none")


@dataclass(frozen=True)
class Mailer:
    """One SMTP server and the From address."""

    host: str
    port: int
    security: str
    sender: str
    user: str = ""
    password: str = ""
    timeout: float = 15.0

    @classmethod
    def from_config(cls, config: ConsoleConfig) -> Mailer | None:
        if not config.smtp_host:
            return None
        if config.smtp_security not in SECURITY:
            raise ConfigError(
                f"console.smtp_security: {config.smtp_security!r} is not one of "
                + ", ".join(SECURITY)
            )
        if "@" not in config.smtp_from:
            raise ConfigError("console.smtp_from: an email address is needed with smtp_host")
        return cls(
            config.smtp_host,
            config.smtp_port,
            config.smtp_security,
            config.smtp_from,
            config.smtp_user,
            config.smtp_password,
            config.smtp_timeout,
        )

    async def send(self, to: str, subject: str, body: str) -> None:
        """:raises OSError, smtplib.SMTPException: the server refused or did not answer."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self.security == "tls":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.user:
                client.login(self.user, self.password)
            client.send_message(message)
