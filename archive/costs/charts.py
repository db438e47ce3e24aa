"""Charts for the cost page, drawn on the server: geometry computed here, SVG elements in the template.

The strict CSP (pacs/middleware.py: no inline script, no inline style) allows
SVG elements with geometry attributes (``x``, ``width``, ``points``); colours
and fonts come from classes in ``static/archive/costs.css``. Labels are plain
data that the template escapes, so a hostile site name is shown as text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from archive.costs.budgets import BudgetStatus
from archive.costs.projection import DAYS_PER_MONTH, GB, YearCost, days
from archive.costs.usage import CostReport, Usage

BAR_WIDTH = 420  # px of the longest bar
LINE_WIDTH, LINE_HEIGHT = 640, 220
MONTHS = 60


@dataclass
class Bar:
    label: str
    value: float
    text: str
    y: int
    width: float
    css: str


def bars(items: list[tuple[str, float, str, str]], row: int = 22) -> dict[str, Any]:
    """Horizontal bars: (label, value, text shown, css class) → rows with their geometry."""
    top = max((v for _, v, _, _ in items), default=0.0)
    out = [
        Bar(label, value, text, i * row, round(BAR_WIDTH * value / top, 1) if top else 0.0, css)
        for i, (label, value, text, css) in enumerate(items)
    ]
    return {"bars": out, "height": max(row, row * len(out)), "width": BAR_WIDTH + 160}


def tier_class(tiers: list[str], name: str) -> str:
    """A stable colour class per tier (tier-0 … tier-5)."""
    return f"tier-{tiers.index(name) % 6}" if name in tiers else "tier-x"


def usage_bars(rows: list[Usage], tiers: list[str], by_tier: bool = False) -> dict[str, Any]:
    return bars(
        [
            (
                u.label,
                float(u.stored),
                f"{u.stored_gb:,.2f} GB stored, {u.objects:,} objects",
                tier_class(tiers, u.label) if by_tier else "bar",
            )
            for u in rows
        ]
    )


def line_chart(lines: list[tuple[str, str, list[float]]], limit: float | None = None) -> dict[str, Any]:
    """Monthly cost for months 0…60: one polyline per (name, css, values); y from 0 to the highest value."""
    top = max([max(v) for _, _, v in lines if v] + [limit or 0.0, 0.0]) or 1.0
    pad = 40

    def x(month: int) -> float:
        return round(pad + (LINE_WIDTH - pad - 10) * month / MONTHS, 1)

    def y(value: float) -> float:
        return round(LINE_HEIGHT - 20 - (LINE_HEIGHT - 30) * value / top, 1)

    polylines = [
        {"name": name, "css": css, "points": " ".join(f"{x(m)},{y(v)}" for m, v in enumerate(values))}
        for name, css, values in lines
    ]
    ticks = [{"x": x(m), "label": f"{m // 12} y" if m else "now"} for m in range(0, MONTHS + 1, 12)]
    digits = max(0, 2 - math.floor(math.log10(top)))  # three significant digits at the top of the scale
    levels = [{"y": y(top * k / 4), "label": f"{top * k / 4:,.{digits}f}"} for k in range(5)]
    return {
        "width": LINE_WIDTH,
        "height": LINE_HEIGHT,
        "lines": polylines,
        "ticks": ticks,
        "levels": levels,
        "left": pad,
        "right": LINE_WIDTH - 10,
        "bottom": LINE_HEIGHT - 20,
    }


def page_context(report: CostReport, budgets: list[BudgetStatus]) -> dict[str, Any]:
    """Everything the cost page shows, from one report."""
    model = report.model()
    tiers = [t.label for t in report.tiers]
    monthly = [model.monthly_storage(days(m)) for m in range(MONTHS + 1)]
    hot_only = [model.monthly_storage(days(m), hot_only=True) for m in range(MONTHS + 1)]
    years: list[YearCost] = model.five_years()
    totals = {
        "storage": sum(y.storage for y in years),
        "retrieval": sum(y.retrieval for y in years),
        "requests": sum(y.requests for y in years),
        "total": sum(y.total for y in years),
        "hot_only": sum(y.hot_only for y in years),
        "savings": sum(y.savings for y in years),
    }
    in_12 = days(12)
    held_12 = model.bytes_by_tier(in_12)
    return {
        "report": report,
        "tier_bars": usage_bars(report.tiers, tiers, by_tier=True),
        "site_bars": usage_bars(report.sites, tiers),
        "modality_bars": usage_bars(report.modalities, tiers),
        "projection": {
            "now": report.monthly_now,
            "in_12": monthly[12],
            "in_60": monthly[60],
            "hot_now": report.monthly_hot_only_now,
            "hot_12": hot_only[12],
            "hot_60": hot_only[60],
            "savings_now": report.monthly_hot_only_now - report.monthly_now,
            "savings_12": hot_only[12] - monthly[12],
            "savings_60": hot_only[60] - monthly[60],
        },
        "where_in_12": [
            {"tier": t, "gb": b / GB, "share": b / sum(held_12.values()) if held_12 else 0.0}
            for t, b in sorted(held_12.items())
        ],
        "cost_chart": line_chart([("with the rules", "line-rules", monthly), ("all on hot", "line-hot", hot_only)]),
        "years": years,
        "totals": totals,
        "budgets": budgets,
        "days_per_month": DAYS_PER_MONTH,
    }
