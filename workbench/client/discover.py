"""Where URLs come from besides a list: a site's sitemaps and news feeds (``wb.sitemap_urls``,
``wb.feed_urls``), read through Workbench's own polite fetcher.

The client makes one ``Fetcher`` from its settings, with the workers' per-host pacer in Redis
(``queue.hosts.RedisHostPacer``): a sitemap or a feed is read with the same robots.txt rules,
per-host pacing (shared with the workers fetching that site), address guard, timeouts and typed
errors as a page. Only the media types it accepts (``inputs.source.INPUT_CONTENT_TYPES``: XML,
feeds, gzip) and the size cap (the reader's ``max_bytes``) differ. The readers are
``workbench.inputs.sitemaps`` (lxml's pull parser, gzip, indexes, robots.txt ``Sitemap:`` lines)
and ``workbench.inputs.feeds`` (feedparser); their frames are ``submit`` input as they are:
``await wb.submit(await wb.sitemap_urls(site))`` carries ``lastmod`` and ``sitemap`` with each
item (``client.carried``).
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from workbench.core.settings import Settings
from workbench.inputs.feeds import FeedLimits, feed_frame
from workbench.inputs.sitemaps import SitemapLimits, sitemap_frame
from workbench.inputs.source import INPUT_CONTENT_TYPES
from workbench.pipeline.fetch.fetcher import Fetcher
from workbench.queue import QueueRedis
from workbench.queue.hosts import RedisHostPacer


def input_fetcher(settings: Settings, redis: QueueRedis | None) -> Fetcher:
    """The client's fetcher for input documents (pacing shared with the workers when ``redis``
    is given)."""
    pacer = RedisHostPacer(redis, settings) if redis is not None else None
    return Fetcher(settings, pacer=pacer)


async def sitemap_urls(
    fetcher: Fetcher, url: str, *, limits: SitemapLimits | None = None
) -> pd.DataFrame:
    """The page URLs of the sitemap(s) at ``url`` (or a site root's, found by its robots.txt):
    ``url``, ``lastmod``, ``sitemap``; the walk's report in ``df.attrs["report"]``."""
    limits = limits or SitemapLimits()
    fetch = partial(fetcher.fetch, accept=INPUT_CONTENT_TYPES, max_bytes=limits.max_bytes)
    return await sitemap_frame(url, fetch, limits=limits)


async def feed_urls(
    fetcher: Fetcher, url: str, *, limits: FeedLimits | None = None
) -> pd.DataFrame:
    """The entries of the RSS or Atom feed at ``url``: ``url``, ``title``, ``published``."""
    limits = limits or FeedLimits()
    fetch = partial(fetcher.fetch, accept=INPUT_CONTENT_TYPES, max_bytes=limits.max_bytes)
    return await feed_frame(url, fetch, limits=limits)
