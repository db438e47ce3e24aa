"""What the archive holds and what it costs: a fixed handful of set-based aggregates, whatever its size.

:func:`cost_report` runs the queries (each a ``GROUP BY`` in the database,
never a loop over the index) and returns a :class:`CostReport`: objects and
bytes per tier, site and modality, the mover's ledger, the measured ingest
rate, and a :class:`~archive.costs.projection.Model` to project from, for the
whole archive or any set of sites (:meth:`CostReport.model`). The biggest
query (:func:`per_series`) sums instances per series and tier, then groups
those sums by (site, day received, rule class, modality, tier): its rows
grow with the archive's age in days, its sites and modalities, never beyond
its number of series.

Stored bytes are :attr:`Instance.stored_size` (what the object takes on its
tier: compressed on zstd), filled by the mover when it switches an object,
and for objects moved before it existed by migration 0013 from the ledger;
an instance without one (written at ingest) counts its Part 10 size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, Count, F, Max, Min, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from archive.costs.projection import GB, Holding, Model, Price, Rate, Rule, tb_per_year
from archive.ingest.lifecycle import rule_scope
from archive.models import (
    ACTIVE_MOVE_STATES,
    Instance,
    LifecycleRule,
    MoveState,
    RuleBasis,
    Series,
    Site,
    Study,
    Tier,
    TierMove,
    TrashEntry,
)

INGEST_TIER = "hot"


@dataclass
class Usage:
    """Objects and bytes (Part 10, and as stored) of one tier, site or modality."""

    label: str
    objects: int = 0
    bytes: int = 0
    stored: int = 0
    monthly: float = 0.0  # the storage bill of a month, at today's prices

    @property
    def gb(self) -> float:
        return self.bytes / GB

    @property
    def stored_gb(self) -> float:
        return self.stored / GB


@dataclass
class Moves:
    """The mover's ledger, summed: moves per state, what is in flight, throughput over the last hour."""

    by_state: dict[str, int]
    in_flight: list[dict[str, Any]]  # per (source, target): objects, bytes
    in_flight_objects: int
    in_flight_bytes: int
    done_objects: int  # moves switched or done
    last_hour_objects: int
    last_hour_bytes: int

    @property
    def progress(self) -> float:
        """Share of the ledger's moves (failed ones aside) that have switched."""
        total = self.done_objects + self.in_flight_objects
        return self.done_objects / total if total else 1.0

    @property
    def throughput_mb_s(self) -> float:
        return self.last_hour_bytes / 1e6 / 3600


@dataclass
class Ingest:
    """The measured ingest rate over the trailing window."""

    window_days: int
    studies: int
    bytes: int

    @property
    def studies_per_day(self) -> float:
        return self.studies / self.window_days if self.window_days else 0.0

    @property
    def average_study_gb(self) -> float:
        return self.bytes / self.studies / GB if self.studies else 0.0

    @property
    def tb_per_year(self) -> float:
        return tb_per_year(self.studies_per_day, self.average_study_gb)


@dataclass
class CostReport:
    now: datetime
    tiers: list[Usage]
    sites: list[Usage]
    modalities: list[Usage]
    moves: Moves
    ingest: Ingest
    monthly_now: float
    monthly_hot_only_now: float
    prices: dict[str, Price]
    rules: list[Rule]
    site_tags: dict[int | None, str]  # site id → cost tag
    site_names: dict[int | None, str]
    read_share: float
    _groups: list[dict[str, Any]] = field(repr=False, default_factory=list)
    _window: tuple[date, date] = field(repr=False, default=(date.min, date.min))
    _studies_by_site: dict[int | None, int] = field(repr=False, default_factory=dict)

    def sites_of(self, site: int | None = None, cost_tag: str = "") -> set[int | None] | None:
        """The site ids a scope covers (None: every study, with or without a site)."""
        if site is not None:
            return {site}
        if cost_tag:
            return {s for s, tag in self.site_tags.items() if tag == cost_tag}
        return None

    def ingest_of(self, sites: set[int | None] | None) -> Ingest:
        first, end = self._window
        studies = sum(n for s, n in self._studies_by_site.items() if sites is None or s in sites)
        covered = [g for g in self._groups if sites is None or g["site"] in sites]
        size = sum(g["bytes"] for g in covered if first <= g["day"] < end)
        return Ingest(self.ingest.window_days, studies, size)

    def monthly_now_of(self, sites: set[int | None] | None) -> float:
        """The storage bill of a month at today's placement and prices, for the given sites (None: all)."""
        return sum(
            g["stored"] / GB * self.prices.get(g["tier"], Price()).gb_month
            for g in self._groups
            if sites is None or g["site"] in sites
        )

    def model(self, sites: set[int | None] | None = None) -> Model:
        """The projection model of the given sites (None: the whole archive)."""
        first, end = self._window
        today = self.now.date()
        holdings: dict[tuple[int, str, int], list[int]] = defaultdict(lambda: [0, 0])
        window: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for g in self._groups:
            if sites is not None and g["site"] not in sites:
                continue
            h = holdings[(g["mask"], g["tier"], (today - g["day"]).days)]
            h[0] += g["n"]
            h[1] += g["bytes"]
            if first <= g["day"] < end:
                window[g["mask"]][0] += g["n"]
                window[g["mask"]][1] += g["bytes"]
        span = self.ingest.window_days
        return Model(
            prices=self.prices,
            rules=self.rules,
            holdings=[Holding(m, t, age, n, b) for (m, t, age), (n, b) in sorted(holdings.items())],
            rates=[Rate(m, n / span, b / span) for m, (n, b) in sorted(window.items())] if span else [],
            ingest_tier=INGEST_TIER,
            read_share=self.read_share,
        )


def rule_classes(rules: list[LifecycleRule]) -> Any:
    """An SQL expression on series: the sum of the bits of the rules whose filters (age aside) it matches."""
    total: Any = Value(0)
    for i, rule in enumerate(rules):
        scope = rule_scope(rule, series="")
        bit = 1 << i
        term = Value(bit) if not scope else Case(When(scope, then=Value(bit)), default=Value(0))
        total = total + term
    return total


def tier_prices(tiers: list[Tier], ratios: dict[str, float]) -> dict[str, Price]:
    return {
        t.name: Price(
            gb_month=float(t.cost_per_gb_month),
            gb_retrieved=float(t.cost_per_gb_retrieved),
            per_1000_requests=float(t.cost_per_1000_requests),
            ratio=ratios.get(t.name, 1.0),
        )
        for t in tiers
    }


def cost_report(now: datetime | None = None, window_days: int | None = None) -> CostReport:
    """Measure the archive: seven queries, whatever its size (three of them aggregates)."""
    now = now or timezone.now()
    window_days = window_days or int(settings.PACS_COST_WINDOW_DAYS)
    today = timezone.localdate(now)
    tiers = list(Tier.objects.all())
    # Promotions follow reads, which the projection does not model; idle-time rules count as from receipt.
    rules = list(
        LifecycleRule.objects.filter(enabled=True).exclude(basis=RuleBasis.ACCESSED_WITHIN).order_by("priority", "id")
    )
    sites = list(Site.objects.values_list("id", "code", "name", "cost_tag"))

    series = Series.objects.annotate(
        site=F("study__site_id"), day=TruncDate("study__created_at"), mask=rule_classes(rules)
    ).values("id", "site", "day", "mask", "modality")
    groups = per_series(series, ["site", "day", "mask", "modality"])

    # The window: the last full days (today is not over), shortened to the archive's age.
    days_held = [g["day"] for g in groups if g["day"] is not None and g["day"] < today]
    oldest = min(days_held, default=today)
    span = max(0, min(window_days, (today - oldest).days))
    first = today - timedelta(days=span)
    # A series in the trash sits under a holder study copying its study's receipt: no study received of its own.
    holders = TrashEntry.objects.exclude(series_instance_uid="").values("study_instance_uid")
    studies_by_site = dict(
        Study.objects.annotate(day=TruncDate("created_at"))
        .filter(day__gte=first, day__lt=today)
        .exclude(study_instance_uid__in=holders)
        .values_list("site_id")
        .annotate(n=Count("id"))
        .order_by()
    )

    by_tier: dict[str, Usage] = {t.name: Usage(t.name) for t in tiers}
    by_site: dict[int | None, Usage] = {}
    for g in groups:
        for usage in (by_tier.setdefault(g["tier"], Usage(g["tier"])), by_site.setdefault(g["site"], Usage(""))):
            usage.objects += g["n"]
            usage.bytes += g["bytes"]
            usage.stored += g["stored"]
    ratios = {name: u.stored / u.bytes for name, u in by_tier.items() if u.bytes}
    prices = tier_prices(tiers, ratios)

    def bill(usage: dict[str, Usage]) -> float:
        return sum(u.stored / GB * prices.get(t, Price()).gb_month for t, u in usage.items())

    for name, u in by_tier.items():
        u.monthly = bill({name: u})
    names: dict[int | None, str] = {s[0]: f"{s[2]} ({s[1]})" for s in sites}
    site_rows: dict[int | None, dict[str, Usage]] = defaultdict(dict)
    for g in groups:
        u = site_rows[g["site"]].setdefault(g["tier"], Usage(g["tier"]))
        u.stored += g["stored"]
    for site_id, u in by_site.items():
        u.label = names.get(site_id, "no site") if site_id is not None else "no site"
        u.monthly = bill(site_rows[site_id])
    by_modality: dict[str, Usage] = {}
    for m in groups:
        u = by_modality.setdefault(m["modality"] or "(none)", Usage(m["modality"] or "(none)"))
        u.objects += m["n"]
        u.bytes += m["bytes"]
        u.stored += m["stored"]
        u.monthly += m["stored"] / GB * prices.get(m["tier"], Price()).gb_month

    hot = prices.get(INGEST_TIER, Price())
    total_bytes = sum(u.bytes for u in by_tier.values())
    report = CostReport(
        now=now,
        tiers=sorted(by_tier.values(), key=lambda u: u.label),
        sites=sorted(by_site.values(), key=lambda u: (-u.bytes, u.label)),
        modalities=sorted(by_modality.values(), key=lambda u: (-u.bytes, u.label)),
        moves=ledger(now),
        ingest=Ingest(span, 0, 0),
        monthly_now=bill(by_tier),
        monthly_hot_only_now=total_bytes * hot.ratio / GB * hot.gb_month,
        prices=prices,
        rules=[Rule(1 << i, r.after_days, r.target_tier) for i, r in enumerate(rules)],
        site_tags={s[0]: s[3] for s in sites},
        site_names=names,
        read_share=float(settings.PACS_COST_READ_SHARE),
        _groups=[g for g in groups if g["day"] is not None],
        _window=(first, today),
        _studies_by_site=studies_by_site,
    )
    report.ingest = report.ingest_of(None)
    return report


def per_series(series: QuerySet[Any, Any], keys: list[str]) -> list[dict[str, Any]]:
    """Instances summed per tier and the series columns ``keys``: one statement, aggregating before joining.

    The instance table is summed per (series, tier) first (no join, no
    expression per instance row), then joined to ``series`` (a ``values()``
    query of series with ``id`` and ``keys``) and summed again, so per-series
    expressions such as the day received or the rule class run once a series.
    """
    inner, inner_params = (
        Instance.objects.values("series_id", "tier")
        .annotate(n=Count("id"), bytes=Sum("size"), stored=Sum(Coalesce("stored_size", "size")))
        .order_by()
        .query.sql_with_params()
    )
    outer, outer_params = series.order_by().query.sql_with_params()
    columns = ", ".join(f"s.{connection.ops.quote_name(k)}" for k in keys)
    # Both subqueries are the ORM's, every value a parameter; the column names are ours.
    sql = (
        f"SELECT {columns}, i.tier, SUM(i.n), SUM(i.bytes), SUM(i.stored) FROM ({inner}) i"  # noqa: S608
        f" JOIN ({outer}) s ON s.id = i.series_id GROUP BY {columns}, i.tier"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*inner_params, *outer_params])
        rows = cursor.fetchall()
    out = []
    for row in rows:
        group = dict(zip([*keys, "tier", "n", "bytes", "stored"], row, strict=True))
        if "day" in group and isinstance(group["day"], str):
            group["day"] = date.fromisoformat(group["day"])  # SQLite gives the date as text
        for name in ("n", "bytes", "stored"):
            group[name] = int(group[name] or 0)
        out.append(group)
    return out


def ledger(now: datetime) -> Moves:
    """The mover's ledger in two aggregates: per state and route, and what switched in the last hour."""
    rows = list(
        TierMove.objects.values("state", "source_tier", "target_tier")
        .annotate(n=Count("id"), bytes=Sum("size"))
        .order_by()
    )
    by_state: dict[str, int] = {s: 0 for s in MoveState.values}
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + r["n"]
        if r["state"] in ACTIVE_MOVE_STATES and r["state"] != MoveState.SWITCHED:
            route = routes.setdefault(
                (r["source_tier"], r["target_tier"]),
                {"source": r["source_tier"], "target": r["target_tier"], "objects": 0, "bytes": 0},
            )
            route["objects"] += r["n"]
            route["bytes"] += r["bytes"] or 0
    recent = TierMove.objects.filter(switched_at__gt=now - timedelta(hours=1), switched_at__lte=now).aggregate(
        n=Count("id"), bytes=Sum("size"), first=Min("switched_at"), last=Max("switched_at")
    )
    in_flight = sorted(routes.values(), key=lambda r: (r["source"], r["target"]))
    return Moves(
        by_state=by_state,
        in_flight=in_flight,
        in_flight_objects=sum(r["objects"] for r in in_flight),
        in_flight_bytes=sum(r["bytes"] for r in in_flight),
        done_objects=by_state.get(MoveState.SWITCHED, 0) + by_state.get(MoveState.DONE, 0),
        last_hour_objects=recent["n"] or 0,
        last_hour_bytes=recent["bytes"] or 0,
    )
