"""Errors meant for people: each says what is wrong, where, and what to do."""

from __future__ import annotations


class PgaasError(Exception):
    """An error the CLI prints without a traceback and exits 1 on."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  {self.hint}"


class SpecError(PgaasError):
    """One or more problems in spec files; every problem names file:line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PlanError(PgaasError):
    """The plan cannot be made or carried out safely (protected object, split brain...)."""


class ConnectionFailed(PgaasError):
    """A node could not be reached or refused us."""


class LockHeld(PgaasError):
    """Another apply holds the pair."""


class StalePlan(PgaasError):
    """A saved plan no longer matches the specs or the live state."""
