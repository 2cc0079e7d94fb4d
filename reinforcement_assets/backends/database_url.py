"""Reading REINFORCEMENT_DATABASE_URL without ever showing it.

libpq's messages about a URL it cannot read quote the URL or the piece it choked on, and a piece
of a badly escaped password can end up as the host name that a connection error then quotes. So
the URL is checked here first, by its shape, and a bad one is refused naming the part that is
wrong, never its value.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import conninfo

SETTING = "REINFORCEMENT_DATABASE_URL"
PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class InvalidDatabaseUrl(ValueError):
    """The database URL cannot be read; the message names the part, without its value."""


def url_problem(url: str) -> str | None:
    """What is wrong with the shape of a `postgresql://` URL (None if nothing is), never quoting it."""
    _, _, rest = url.partition("://")
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    if authority.count("@") > 1:
        return "more than one '@' before the host: percent-encode '@' in the user or password as %40"
    userinfo, _, hosts = authority.rpartition("@")
    if re.search(r"\s", userinfo):
        return "a space in the user or password: percent-encode it as %20"
    if PERCENT_ESCAPE.search(userinfo):
        return "a '%' in the user or password that is not a percent-encoding: write '%' as %25"
    if re.search(r"\s", authority):
        return "a space in the host"
    for host in hosts.split(","):
        if host.count("[") != host.count("]"):
            return "an IPv6 host without its closing ']'"
        port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
        if port and not port.isdigit():
            return ("a port that is not a number (a '/', '?', '#' or ':' in the password must be "
                    "percent-encoded: %2F, %3F, %23, %3A)")
    return None


def connection_parameters(url: str, setting: str = SETTING) -> dict[str, str]:
    """libpq's parameters of `url` (a `postgresql://` URL or `key=value` settings), or
    `InvalidDatabaseUrl` naming what is wrong, never a value from it."""
    is_url = bool(re.match(r"postgres(ql)?://", url.strip()))
    problem = url_problem(url.strip()) if is_url else None
    if problem:
        raise InvalidDatabaseUrl(f"{setting} is not a valid PostgreSQL URL ({problem})")
    try:
        return conninfo.conninfo_to_dict(url)
    except psycopg.Error:  # its message quotes the URL
        kind = "URL" if is_url else "connection string"
        raise InvalidDatabaseUrl(f"{setting} is not a valid PostgreSQL {kind} (libpq cannot parse it; "
                                 "percent-encode special characters in the password)") from None
