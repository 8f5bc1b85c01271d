"""The sample site: a small static magazine served on loopback, with routes that fail on purpose.

``site`` serves it (see its docstring for the routes), ``broken`` builds what the failure routes
answer (see its docstring for the table of them); the demo, the example notebooks and the tests
use it, so they need no network.
"""

from workbench.samplesite.broken import BROKEN_ROUTES, FLAKY_PATH
from workbench.samplesite.site import (
    SampleArticle,
    SampleSite,
    sample_site,
    sample_site_dir,
    serve_sample_site,
    serve_sample_site_in_thread,
)

__all__ = [
    "BROKEN_ROUTES",
    "FLAKY_PATH",
    "SampleArticle",
    "SampleSite",
    "sample_site",
    "sample_site_dir",
    "serve_sample_site",
    "serve_sample_site_in_thread",
]
