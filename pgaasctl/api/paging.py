"""Lists are paginated: `page_size` items from where `page_token` (the next_page_token of the page before) says."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

MAX_PAGE_SIZE = 500
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
PageToken = Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$", description="The next_page_token of the page before.")]


def page(items: list[Any], page_size: int, page_token: str | None) -> tuple[list[Any], str | None]:
    """One page of `items`; the token is where the next page starts (past the end: an empty page)."""
    start = int(page_token) if page_token else 0
    end = start + page_size
    return items[start:end], (str(end) if end < len(items) else None)
