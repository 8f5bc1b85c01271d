"""The completion email and its delivery: the message, its recipients, the SMTP target, sending.

Delivery policy of ``send_email``: transient failures (connection refused or reset, timeouts, 4xx
replies) are retried with exponential backoff (``core.backoff``, no jitter: ``backoff_s`` doubling
per try); a permanent failure (5xx: recipient or sender refused, authentication failed, STARTTLS
not offered) raises ``PermanentSmtpError`` at once. What happens to the batch's claim after a
failure is ``workbench.notify.notifier``'s business.

Recipients (``parse_recipients``) are checked strictly when a batch is submitted, and again
before sending: plain ASCII addresses (``local@domain.tld``, no display names, no quoted or
commented forms), separated by commas, semicolons or spaces, at most ``MAX_RECIPIENTS``. What
could smuggle a header or a second envelope recipient (CR, LF, ``<``, ``>``, a quote) fails
the check, so ``"a@b.org\r\nBcc: x@y"`` is an error, not two recipients. Credentials are never
sent over a plain connection: ``smtp://user:pass@`` is refused unless
``WORKBENCH_SMTP_ALLOW_INSECURE_AUTH`` says the network is trusted.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from workbench.core import backoff
from workbench.core.logs import get_logger
from workbench.core.text import clip, format_duration
from workbench.notify.summary import BatchSummary

log = get_logger("workbench.notify.email")

__all__ = [
    "MAX_RECIPIENTS",
    "PermanentSmtpError",
    "SmtpTarget",
    "compose_email",
    "normalize_notify",
    "parse_recipients",
    "parse_smtp_url",
    "recipients_of",
    "send_email",
]


# ---------------------------------------------------------------------------- the message
def compose_email(summary: BatchSummary, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The summary email: counts, duration, top error types with a sample, how to retry."""
    c = summary.counts
    outcome = f"{c['done']} done, {c['failed']} failed"
    if c["cancelled"]:
        outcome += f", {c['cancelled']} cancelled"
    msg = EmailMessage()
    label = clip(summary.name, 80) if summary.name else summary.batch_id  # one line, always
    msg["Subject"] = f"[Workbench] batch {label} finished: {outcome}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=_domain_of(sender))
    msg["X-Workbench-Batch"] = summary.batch_id
    bid = summary.batch_id
    lines = [
        f"Batch {summary.label} has finished.",
        "",
        f"Pipeline:  {summary.pipeline} v{summary.pipeline_version}",
        f"Items:     {summary.total} — "
        + ", ".join(f"{s} {c[s]}" for s in ("done", "failed", "cancelled")),
        f"Submitted: {summary.created_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if summary.last_finished_at is not None:
        lines.append(
            f"Finished:  {summary.last_finished_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(took {format_duration(summary.duration_s)})"
        )
    lines.append("")
    if summary.top_errors:
        lines.append("Failures by error type (most frequent first):")
        for g in summary.top_errors:
            retry = "" if g.retryable is None else (" (retryable)" if g.retryable else "")
            lines.append(f"  {g.error_type}: {g.count} item(s){retry}")
            lines.append(f"      e.g. {g.sample_url}")
            if g.sample_message:
                lines.append(f"      {clip(g.sample_message, 200)}")
        shown = sum(g.count for g in summary.top_errors)
        if shown < c["failed"]:
            lines.append(f"  … and {c['failed'] - shown} more in other error types")
        lines += [
            "",
            "To retry the failed items, from a shell:",
            f"    python -m workbench retry {bid}",
            "or in Python (a notebook):",
            "    from workbench import Workbench",
            "    wb = Workbench()",
            f'    batch = await wb.get_batch("{bid}")',
            "    await batch.retry()",
            "",
            f"List the failures:  python -m workbench failures {bid}",
        ]
    else:
        lines.append("No item failed.")
    lines += [
        f"Export the results: python -m workbench results {bid} --format csv -o results.csv",
        f'In Python:          df = await (await wb.get_batch("{bid}")).results()',
        "",
        f"-- sent by the Workbench worker on {socket.gethostname()}",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _domain_of(address: str) -> str:
    _, addr = email.utils.parseaddr(address)
    return addr.rpartition("@")[2] or "localhost"


#: recipients of one batch's email: a lab list, not a mailing list
MAX_RECIPIENTS = 10
_MAX_ADDRESS = 254  # RFC 5321's path limit
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SEPARATORS = re.compile(r"[,;\s]+")


def _check_address(address: str) -> str | None:
    """Why ``address`` is not a plain ``local@domain`` address, or None if it is."""
    if len(address) > _MAX_ADDRESS:
        return f"longer than {_MAX_ADDRESS} characters"
    if not address.isascii() or not address.isprintable():
        return "only plain ASCII addresses, without control characters, are accepted"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "is not an email address (local@domain)"
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        return f"has an invalid part before the @ ({local!r})"
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"has an invalid domain ({domain!r}: expected a name such as example.org)"
    return None


def parse_recipients(notify: str, *, limit: int = MAX_RECIPIENTS) -> list[str]:
    """The addresses of a ``notify`` value: ``"a@b.org, c@d.org"`` -> both, in order, each once.

    Raises ``ValueError`` saying what is wrong: an invalid address (naming it), none at all, or
    more than ``limit``."""
    if not isinstance(notify, str):
        raise ValueError(f"must be a string of email addresses, got {type(notify).__name__}")
    if "\r" in notify or "\n" in notify:
        raise ValueError("must not contain line breaks (one line of addresses)")
    found: list[str] = []
    for address in _SEPARATORS.split(notify.strip()):
        if not address:
            continue
        problem = _check_address(address)
        if problem:
            shown = address if len(address) <= 80 else address[:80] + "…"
            raise ValueError(f"{shown!r} {problem}")
        if address.lower() not in (a.lower() for a in found):
            found.append(address)
        if len(found) > limit:
            raise ValueError(f"at most {limit} recipients per batch")
    if not found:
        raise ValueError("no email address given")
    return found


def normalize_notify(notify: str | None) -> str | None:
    """The value stored with a batch: its recipients joined by ``", "`` (None stays None).
    Raises ``ValueError`` like ``parse_recipients``."""
    if notify is None:
        return None
    return ", ".join(parse_recipients(notify))


def recipients_of(notify: str) -> list[str]:
    """``"a@b.org, c@d.org"`` -> both addresses; none if the value is not valid (a batch
    recorded before addresses were checked strictly)."""
    try:
        return parse_recipients(notify)
    except ValueError:
        return []


# ---------------------------------------------------------------------------- SMTP
@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # smtps:// (TLS from the first byte)
    start_tls: bool = False  # smtp+starttls://

    def __repr__(self) -> str:  # never show the password
        user = f"{self.username}@" if self.username else ""
        mode = "smtps" if self.use_tls else ("smtp+starttls" if self.start_tls else "smtp")
        return f"SmtpTarget({mode}://{user}{self.hostname}:{self.port})"


def parse_smtp_url(url: str, *, allow_insecure_auth: bool = False) -> SmtpTarget:
    """``smtp://host:port`` (plain, default port 25), ``smtps://host:port`` (implicit TLS, 465),
    ``smtp+starttls://user:pass@host:port`` (STARTTLS, 587). User and password are
    percent-decoded; with ``smtp://`` they are refused (``PermanentSmtpError``: they would
    cross the network in clear text) unless ``allow_insecure_auth``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    defaults = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
    if scheme not in defaults or not parts.hostname:
        raise ValueError(
            "WORKBENCH_SMTP_URL must look like smtp://host:port, smtps://host:port or "
            "smtp+starttls://user:pass@host:port"
        )
    if scheme == "smtp" and (parts.username or parts.password) and not allow_insecure_auth:
        raise PermanentSmtpError(
            "refusing to send SMTP credentials over a plain connection: use smtps:// or "
            "smtp+starttls://, or set WORKBENCH_SMTP_ALLOW_INSECURE_AUTH=true"
        )
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or defaults[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=scheme == "smtps",
        start_tls=scheme == "smtp+starttls",
    )


class PermanentSmtpError(Exception):
    """The server refused for good (5xx) or the configuration cannot work."""


def _is_transient(exc: BaseException) -> bool:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= r.code < 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return False
    return isinstance(exc, (OSError, TimeoutError, aiosmtplib.SMTPException))


async def send_email(
    message: EmailMessage,
    target: SmtpTarget,
    *,
    tries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 30.0,
    on_failure: Callable[[BaseException], object] | None = None,
) -> None:
    """Send with retries on transient failures, ``backoff_s`` doubling per try. Raises
    ``PermanentSmtpError`` at once on a permanent one, or the last transient error once ``tries``
    are used up. ``on_failure`` sees every failed try."""
    import aiosmtplib

    for attempt in range(1, tries + 1):
        try:
            await aiosmtplib.send(
                message,
                hostname=target.hostname,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                timeout=timeout_s,
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_failure is not None:
                on_failure(exc)
            if not _is_transient(exc):
                raise PermanentSmtpError(f"{type(exc).__name__}: {exc}") from exc
            if attempt == tries:
                raise
            delay = backoff.backoff_s(attempt, backoff_s, math.inf, jitter=False)
            log.info("smtp send failed; retrying", target=repr(target), attempt=attempt,
                     delay_s=delay, error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(delay)
