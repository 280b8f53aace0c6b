"""The paper's Tables 1-3 (Oorloff & Yacoob, ICCV 2023), shipped as package data.

The CSVs live in ``results/paper/`` and are installed as the package
``reenactbench.paper_results``. Each row is one printed cell: ``value`` and ``std`` are
the printed numbers times ``scale``, i.e. in reenactbench's units (L1 on the 0..255
scale, LPIPS and L_ID unscaled, FID/FVD as computed).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib.resources import files

from reenactbench.errors import InputError

__all__ = [
    "KINDS",
    "PAPER_LABELS",
    "ROBUSTNESS_EXPONENTS",
    "TABLE_NAMES",
    "TABLE_NUMBERS",
    "PaperCell",
    "load_paper_table",
    "method_label",
    "table_name",
]

#: Protocol kind -> file stem of the paper's table (and of our report table).
TABLE_NAMES: dict[str, str] = {
    "same-id": "table1_same_id",
    "cross-id": "table2_cross_id",
    "robustness": "table3_robustness",
}
#: Protocol kind -> the paper's table number.
TABLE_NUMBERS: dict[str, int] = {"same-id": 1, "cross-id": 2, "robustness": 3}
KINDS = tuple(TABLE_NAMES)

#: Registry method name -> label printed in the paper (typo "PIRendererer" fixed).
PAPER_LABELS: dict[str, str] = {
    "fomm": "FOMM",
    "pirenderer": "PIRenderer",
    "lia": "LIA",
    "fs-vid2vid": "FS-Vid2Vid",
    "styleheat": "StyleHEAT",
    "hybrid": "Ours",
    "hybrid-no-idreg": "Ours w/o ID reg",
    "hybrid-no-hybrid": "Ours w/o Hybrid",
    "hybrid-no-cma": "Ours w/o CMA",
    "hybrid-pti": "Ours \u2013 CMA + PTI",
}

#: Table 3 prints ``value / 10**e``: LPIPS x10^-2, L_ID x10^-1, FID x10^1, FVD x10^2.
ROBUSTNESS_EXPONENTS: dict[str, int] = {"lpips": -2, "id": -1, "fid": 1, "fvd": 2}


@dataclass(frozen=True)
class PaperCell:
    """One number of the paper's tables.

    Attributes:
        method: registry method name (e.g. ``"fomm"``).
        label: label as printed (e.g. ``"FOMM"``).
        resolution: the method's output resolution in pixels (Table 1's "res." column).
        metric: registry metric key (e.g. ``"l1"``).
        printed: the number exactly as printed (e.g. ``"7.5"``).
        printed_std: the printed std (Table 3 only, else ``""``).
        scale: ``value = float(printed) * scale``.
        value: the number in reenactbench's units.
        std: the std in reenactbench's units (Table 3 only, else ``None``).
        rank: ``"second"`` where the paper underlines the cell, else ``""``.
    """

    method: str
    label: str
    resolution: int
    metric: str
    printed: str
    printed_std: str
    scale: float
    value: float
    std: float | None
    rank: str


def table_name(kind: str) -> str:
    """File stem of the table for protocol ``kind`` (e.g. ``"table1_same_id"``).

    Raises:
        InputError: ``kind`` is not one of :data:`KINDS`.
    """
    try:
        return TABLE_NAMES[kind]
    except KeyError:
        raise InputError(
            f"protocol kind {kind!r} has no paper table; expected one of {', '.join(KINDS)}"
        ) from None


def method_label(method: str) -> str:
    """The paper's label of ``method`` (``"fomm"`` -> ``"FOMM"``), else ``method`` as-is."""
    return PAPER_LABELS.get(method, method)


def load_paper_table(kind: str) -> dict[str, dict[str, PaperCell]]:
    """The paper's table for protocol ``kind``.

    Args:
        kind: ``"same-id"`` (Table 1), ``"cross-id"`` (Table 2) or ``"robustness"`` (Table 3).

    Returns:
        method -> metric -> cell, methods in the paper's row order, metrics in its
        column order.

    Raises:
        InputError: unknown kind, or the table is missing from the installed package.
    """
    name = f"{table_name(kind)}.csv"
    resource = files("reenactbench.paper_results").joinpath(name)
    if not resource.is_file():
        raise InputError(
            f"paper table {name} is missing from reenactbench.paper_results; "
            "reinstall reenactbench (pip install -e .)"
        )
    table: dict[str, dict[str, PaperCell]] = {}
    for row in csv.DictReader(io.StringIO(resource.read_text(encoding="utf-8"))):
        cell = PaperCell(
            method=row["method"],
            label=row["label"],
            resolution=int(row["resolution"]),
            metric=row["metric"],
            printed=row["printed"],
            printed_std=row["printed_std"],
            scale=float(row["scale"]),
            value=float(row["value"]),
            std=float(row["std"]) if row["std"] else None,
            rank=row["rank"],
        )
        table.setdefault(cell.method, {})[cell.metric] = cell
    return table
