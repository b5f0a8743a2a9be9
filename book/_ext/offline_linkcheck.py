"""Sphinx extension: the link check skips external links unless ``CHECK_EXTERNAL_LINKS=1``.

CI has no network, so there ``make linkcheck`` checks what it can: the local links and files that pages
point to. Sphinx still prints each external link, marked "-ignored-", with its page and line; with a
network, ``CHECK_EXTERNAL_LINKS=1 make linkcheck`` checks them too.
"""

from __future__ import annotations

import os

from sphinx.application import Sphinx
from sphinx.config import Config


def _ignore_external_links(app: Sphinx, config: Config) -> None:
    if os.environ.get("CHECK_EXTERNAL_LINKS") != "1":
        config.linkcheck_ignore = [*config.linkcheck_ignore, r"https?://"]


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _ignore_external_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
