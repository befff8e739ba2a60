"""Operations, in the manner of Cloud SQL: a change asked of the API returns at once with an operation, which runs
on its own thread (plan, then apply, of the documents the request wrote) and is kept in the store with its plan and
outcome. One operation per pair at a time. An operation that was running when the server stopped is marked failed
(`interrupted`) at the next start: its documents are on disk, so the next plan finishes the job."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from pgaasctl.api import errors
from pgaasctl.api.errors import ApiError, ErrorDetail
from pgaasctl.errors import PgaasError
from pgaasctl.store import Store

log = logging.getLogger("pgaasctl.api")
Status = Literal["PENDING", "RUNNING", "DONE", "FAILED"]
ACTIVE: tuple[Status, ...] = ("PENDING", "RUNNING")


class Operation(BaseModel):
    id: str
    type: str  # CREATE_DATABASE, DELETE_DATABASE, ...
    target: str  # the address: database.PAIR.NAME
    pair: str
    user: str
    status: Status
    plan: dict[str, Any] | None = None  # the plan it applied (plan --json)
    error: ErrorDetail | None = None
    started: str
    ended: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


Work = Callable[[Operation], dict[str, Any] | None]  # runs the change; returns the plan it applied


class OperationRunner:
    """Starts operations on threads, one per pair at a time, and lets callers wait for their end."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    def interrupt_leftovers(self) -> int:
        """Operations a previous server left running: failed, with the reason."""
        count = 0
        for data in self.store.operations_data(statuses=ACTIVE):
            op = Operation.model_validate_json(data)
            op.status, op.ended = "FAILED", _now()
            op.error = ErrorDetail(code=500, reason="interrupted", retryable=True, message=(
                "the server stopped while this operation ran; its documents are in the specs, so the next plan "
                "(or the same request again) finishes the job"))
            self._save(op)
            count += 1
        return count

    def start(self, pair: str, op_type: str, target: str, user: str, work: Work,
              before: Callable[[], None] | None = None) -> Operation:
        """A new operation on `pair` (409 while another runs there). `before` runs under the pair's claim, before
        the operation is recorded: the request's own checks and document writes, so two requests never interleave."""
        with self._lock:
            busy = self.store.operations_data(pair=pair, statuses=ACTIVE, limit=1)
            if busy:
                other = Operation.model_validate_json(busy[0])
                raise ApiError(409, f"pair {pair!r} has an operation under way ({other.id}, {other.type} of "
                               f"{other.target}); try again when it ends", reason="operation_in_progress",
                               retryable=True)
            if before is not None:
                before()
            op = Operation(id=secrets.token_hex(8), type=op_type, target=target, pair=pair, user=user,
                           status="PENDING", started=_now())
            self._save(op)
        thread = threading.Thread(target=self._run, args=(op, work), name=f"operation-{op.id}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return op

    def _run(self, op: Operation, work: Work) -> None:
        op.status = "RUNNING"
        self._save(op)
        try:
            op.plan = work(op)
            op.status = "DONE"
        except ApiError as exc:
            op.status, op.error = "FAILED", exc.detail
        except PgaasError as exc:
            op.status = "FAILED"
            op.error = ErrorDetail(code=400, reason="failed", message=errors.said(exc), retryable=False)
        except Exception:  # noqa: BLE001 - an operation's bug is its failure, never the server's end
            log.exception("operation %s failed", op.id)
            op.status = "FAILED"
            op.error = ErrorDetail(code=500, reason="internal", message="the operation failed; the server's log says "
                                   "why", retryable=True)
        op.ended = _now()
        with self._lock:
            self._save(op)
            self._ended.notify_all()

    def _save(self, op: Operation) -> None:
        self.store.record_operation(op.id, op.pair, op.type, op.target, op.user, op.status, op.model_dump_json(),
                                    op.started, op.ended)

    def get(self, op_id: str) -> Operation | None:
        data = self.store.operation_data(op_id)
        return Operation.model_validate_json(data) if data else None

    def wait(self, op_id: str, seconds: float) -> Operation | None:
        """The operation once it ended, or as it is after `seconds`."""
        until = time.monotonic() + seconds
        with self._lock:
            while True:
                op = self.get(op_id)
                if op is None or op.status not in ACTIVE:
                    return op
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return op
                self._ended.wait(remaining)

    def list(self, pair: str | None = None) -> list[Operation]:
        return [Operation.model_validate_json(d) for d in self.store.operations_data(pair=pair)]

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
