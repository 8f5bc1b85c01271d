"""Web archives in and out: ``reader`` streams the HTTP responses of WARC/WARC.gz files (no
network), ``writer`` writes pages as WARC/1.1. Both are re-exported here::

    from workbench.inputs.warc import WarcPage, SkippedRecord, WarcWriter, iter_warcs
"""

from workbench.inputs.warc.reader import (
    SkippedRecord,
    SkipReason,
    WarcPage,
    WarcRef,
    WarcStats,
    iter_warc,
    iter_warcs,
    warc_chunks,
)
from workbench.inputs.warc.writer import WarcWriter

__all__ = [
    "SkipReason",
    "SkippedRecord",
    "WarcPage",
    "WarcRef",
    "WarcStats",
    "WarcWriter",
    "iter_warc",
    "iter_warcs",
    "warc_chunks",
]
