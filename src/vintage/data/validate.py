"""Validate a data frame before training. Invalid data never reaches training."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from vintage.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

_MAX_ROWS_SHOWN = 5


def validate_frame(
    frame: pd.DataFrame, *, features: Sequence[str], target: str, source: str, row_offset: int = 0
) -> pd.DataFrame:
    """Check the frame and return just ``features + [target]`` as float64 columns.

    Checks: at least one row; every required column present; every value numeric; no missing target; no
    NaN or infinite feature. Row numbers in messages count data rows from 1 (the header is not a row);
    ``row_offset`` rows come before ``frame`` (a chunk of a larger file).

    Raises:
        DataError: listing every problem found (first offending rows per column).
    """
    import numpy as np
    import pandas as pd

    required = [*features, target]
    problems = _missing_columns(frame, required)
    if problems:
        raise _invalid(source, problems)
    if len(frame) == 0:
        raise DataError(f"invalid data in {source}: the data set has no rows")
    numeric: dict[str, pd.Series] = {}
    for col in required:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            example = repr(frame[col][bad].iloc[0])[:40]
            problems.append(
                f"column {col!r}: non-numeric values at {_rows(bad, row_offset)} (e.g. {example})"
            )
        numeric[col] = values.astype("float64")
    for col in required:
        values = numeric[col]
        missing = values.isna() & frame[col].isna()
        if missing.any():
            what = "missing target values" if col == target else "missing values (NaN)"
            problems.append(f"column {col!r}: {what} at {_rows(missing, row_offset)}")
        inf = pd.Series(np.isinf(values.to_numpy()), index=values.index)
        if inf.any():
            problems.append(f"column {col!r}: infinite values at {_rows(inf, row_offset)}")
    if problems:
        raise _invalid(source, problems)
    return pd.DataFrame(numeric).reset_index(drop=True)


def _missing_columns(frame: pd.DataFrame, required: Sequence[str]) -> list[str]:
    present = [str(c) for c in frame.columns]
    out = []
    for col in required:
        if col not in present:
            close = difflib.get_close_matches(col, present, n=1)
            out.append(
                f"required column {col!r} is missing" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    return out


def _rows(mask: pd.Series, offset: int = 0) -> str:
    positions = [offset + i + 1 for i, flag in enumerate(mask.to_numpy()) if flag]
    shown = ", ".join(map(str, positions[:_MAX_ROWS_SHOWN]))
    more = f" and {len(positions) - _MAX_ROWS_SHOWN} more" if len(positions) > _MAX_ROWS_SHOWN else ""
    return f"row{'s' if len(positions) > 1 else ''} {shown}{more}"


def _invalid(source: str, problems: list[str]) -> DataError:
    n = len(problems)
    return DataError(
        f"invalid data in {source}: {problems[0]}"
        + (f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""),
        hint="fix the data file (or data.features / data.target in vintage.yaml); nothing was trained",
        details=problems,
    )
