"""Value objects that flow through a pipeline: a fetched ``Page`` and an extracted ``Document``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Page:
    """A fetched (or stored) web page.

    ``body`` holds the bytes of the document: its Content-Encoding (gzip, deflate, br) already
    undone, its charset not (``headers`` still names the Content-Encoding it came with).
    ``encoding`` is the charset that ``text`` decodes with: the declared one when it works, else
    the detected one. ``final_url`` is where redirects ended, possibly on another scheme than
    ``url`` (http -> https); ``redirects`` lists the URLs that redirected, in order.
    """

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    content_type: str
    body: bytes
    encoding: str
    fetched_at: datetime
    from_store: bool = False
    redirects: tuple[str, ...] = ()

    @cached_property
    def text(self) -> str:
        return self.body.decode(self.encoding, errors="replace")

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def __repr__(self) -> str:
        src = "store" if self.from_store else "network"
        return (
            f"Page({self.final_url!r}, status={self.status}, {self.content_type}, "
            f"{len(self.body)} bytes, {self.encoding}, from {src})"
        )


@dataclass(frozen=True)
class Document:
    """The main content and metadata trafilatura extracted from a page."""

    url: str | None = None
    title: str | None = None
    author: str | None = None
    date: str | None = None
    sitename: str | None = None
    description: str | None = None
    language: str | None = None
    text: str = ""
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    comments: str | None = None
    hostname: str | None = None
    image: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}
