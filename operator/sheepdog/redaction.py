"""Redact credentials from text before it is written where anyone who may `get` a run reads it.

A failing stage's last words (its termination message: the Python exception, a log tail) are
copied into the run's status.message, its stage records, its Events and status.pendingEvents,
and the operator logs them. A stage that fails while talking to a hub, a judge or a tracking
server may print the URL it used, with the user-info in it, or a token from its environment.
Those readers are not the people who hold the Secret, so what looks like a credential is
replaced by REDACTED before it is written:

- user-info in URLs: https://user:pass@host -> https://REDACTED@host (any scheme);
- known token shapes: Hugging Face (hf_...), OpenAI-style (sk-...), GitHub (ghp_, gho_, ghu_,
  ghs_, ghr_, github_pat_), AWS access key ids (AKIA..., ASIA...), Slack (xox?-), Google API
  keys (AIza...), JWTs (a Kubernetes ServiceAccount token), PEM private keys;
- the value of `Authorization: Bearer ...` / `Basic ...`, and of `key=value` / `key: value`
  pairs whose key names a secret (password, token, api_key, secret, ...).

Pure and idempotent (redact(redact(x)) == redact(x)). RedactingFilter applies it to every log
record of a handler (the operator's log).
"""

from __future__ import annotations

import logging
import re

REDACTED = "REDACTED"

# scheme://user[:password]@ -- the user-info ends at the last "@" before the host's "/".
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@]+)@")

_TOKENS = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
]

_AUTH_HEADER = re.compile(r"(?i)\b(?P<head>(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)"
                          r"(?P<value>[^\s\"',;]+)")
_BEARER = re.compile(r"(?i)\b(?P<head>bearer\s+)(?P<value>[A-Za-z0-9._~+/\-]{16,}=*)")

# key=value or key: value where the key names a secret; "tokens: 64" or "max_tokens=64" are
# not (the key must end right before the separator, and start at a word boundary).
_SECRET_KEY = (r"(?:password|passwd|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token|"
               r"auth[_-]?token|api[_-]?key|apikey|access[_-]?key|secret[_-]?access[_-]?key|"
               r"aws_secret_access_key|hf_token|hub_token|private[_-]?key)")
_KEY_VALUE = re.compile(r"(?i)(?P<head>(?<![A-Za-z0-9])" + _SECRET_KEY + r"[\"']?\s*[=:]\s*[\"']?)"
                        r"(?P<value>[^\s\"',;&)}\]]+)")


def _keep_redacted(m: re.Match, head: str) -> str:
    value = m.group("value")
    return m.group(0) if value == REDACTED else m.group(head) + REDACTED


def redact(text: str) -> str:
    """`text` with every credential-looking part replaced by REDACTED."""
    if not text:
        return text
    out = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    for pattern in _TOKENS:
        out = pattern.sub(REDACTED, out)
    out = _AUTH_HEADER.sub(lambda m: _keep_redacted(m, "head"), out)
    out = _BEARER.sub(lambda m: _keep_redacted(m, "head"), out)
    out = _KEY_VALUE.sub(lambda m: _keep_redacted(m, "head"), out)
    return out


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message (arguments and traceback included) redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            # the traceback's text may quote the failing value; fold it in, redacted
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redact(message), None
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Install RedactingFilter on every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


__all__ = ["REDACTED", "RedactingFilter", "redact", "redact_logs"]
