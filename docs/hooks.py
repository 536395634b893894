"""MkDocs hook: the configuration reference page is generated from the code at build time
(`pipeline/config/reference.py`), so it cannot go stale."""

from __future__ import annotations


def on_page_markdown(markdown: str, page, **_) -> str:
    if page.file.src_uri != "reference.md":
        return markdown
    from pipeline.config.reference import reference_markdown

    return markdown + "\n" + reference_markdown()
