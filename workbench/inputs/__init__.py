"""The inputs researchers already have, read in bounded memory, and web archives in and out.

================  ==========================================================================
``sitemaps``      a site's sitemaps (indexes, gzip, robots.txt ``Sitemap:`` lines) -> rows of
                  (url, lastmod, sitemap)
``feeds``         RSS 2.0 and Atom -> rows of (url, title, published)
``warc``          WARC/WARC.gz files -> HTTP response records, no network; and a WARC/1.1
                  writer for the pages a batch analysed
``tables``        a pandas/polars DataFrame or a CSV/Parquet/JSONL file -> chunks of (url,
                  carried columns), validated, never the whole table as Python objects
``values``        what a carried cell becomes in JSON (dates as ISO 8601, NaN as null, ...)
``source``        the fetch contract the sitemap and feed readers share: the caller's polite
                  fetcher, size caps, gzip
================  ==========================================================================

These modules read and write; they do not submit. The client turns their rows into batches
(``wb.submit(df, url_column=...)``, ``wb.sitemap_urls``, ``wb.feed_urls``, ``wb.submit_warc``,
``batch.export_warc``). Bad input raises ``InvalidInputError`` subclasses from
``workbench.core.errors`` (``InvalidTableError``, ``InvalidSitemapError``, ``InvalidFeedError``,
``InvalidWARCError``, ``InputTooLarge``) that name the input and what is wrong with it.
"""
