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


class RenderedPages:
    """A busy list's response bodies, kept while what they were made from (compared with `is`) stays the same:
    answering a repeated read costs a dictionary look-up instead of building and serialising the page again."""

    MAX_BODIES = 256  # distinct (visibility, page) keys kept; a caller walking odd page sizes cannot grow it more

    def __init__(self) -> None:
        self._made_from: tuple[Any, ...] = ()
        self._bodies: dict[tuple[Any, ...], bytes] = {}

    def current(self, made_from: tuple[Any, ...]) -> bool:
        """Whether the kept bodies were made from these; if not, they are dropped."""
        if len(made_from) == len(self._made_from) and all(a is b for a, b in zip(made_from, self._made_from)):
            return True
        self._made_from, self._bodies = made_from, {}
        return False

    def body(self, key: tuple[Any, ...]) -> bytes | None:
        return self._bodies.get(key)

    def keep(self, key: tuple[Any, ...], body: bytes) -> bytes:
        if len(self._bodies) >= self.MAX_BODIES:
            self._bodies.clear()
        self._bodies[key] = body
        return body
