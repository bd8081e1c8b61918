"""What every vintage.yaml model shares: strict models, and names checked against a plug-in table."""

from __future__ import annotations

from pydantic import AfterValidator, BaseModel, ConfigDict

from vintage.plugins import Table


class Strict(BaseModel):
    """A config model that forbids unknown keys (a typo is an error naming the key path) and is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def in_table(table: Table) -> AfterValidator:
    """A config value that must name a row of ``table`` (the plug-in tables of :mod:`vintage.plugins`)."""

    def check(value: str) -> str:
        if value not in table:
            raise ValueError(table.unknown(value))
        return value

    return AfterValidator(check)
