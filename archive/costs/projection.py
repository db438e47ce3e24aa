"""Cost projection: where the archive's bytes will be after N days, and what that costs (pure arithmetic).

Nothing here touches the database: :mod:`archive.costs.usage` measures, this
module runs the measurement forward. The model:

- **Ingest** continues at the measured rate: the seed's sizing formula,
  TB/year ≈ studies/day × average study size (GB) × 365 / 1024, with both
  numbers taken from the archive's own trailing window. New data arrives on
  the ingest tier (``hot``) and splits between *classes* in the proportions
  the window showed, a class being the set of lifecycle rules whose filters
  (site, modality, body part, description) an instance matches.
- **Rules** act as :mod:`archive.ingest.lifecycle` applies them: at age *a*
  days an instance is on the target of the first rule, by priority, whose
  filters it matches and whose ``after_days`` ≤ *a*; before any rule applies
  it stays where it is. So for each class the tier is a step function of age,
  and the bytes of each tier at day *T* are exact sums of interval lengths.
- **Stored bytes** are Part 10 bytes × the tier's measured ratio (stored /
  Part 10 on that tier today; 1 on a tier holding nothing yet).
- **Months** are 365/12 days; GB are 2**30 bytes and TB 1024 GB, as in the
  formula and as cloud bills count them.
- **Requests and retrieval**: one request per object written at ingest;
  a move is a read (request + retrieval per GB on the source) and a write
  (request on the target); ``read_share`` of the data held is read back once
  a year (an assumption, 0 by default: reads set each study's last access,
  not a count of reads). Promotion rules (accessed within N days) are left out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

GB = 1024**3
TB_IN_GB = 1024
DAYS_PER_YEAR = 365
DAYS_PER_MONTH = DAYS_PER_YEAR / 12


def days(months: float) -> float:
    return months * DAYS_PER_MONTH


@dataclass(frozen=True)
class Price:
    """A tier's prices, and how many bytes it stores per Part 10 byte (zstd: less than 1)."""

    gb_month: float = 0.0
    gb_retrieved: float = 0.0
    per_1000_requests: float = 0.0
    ratio: float = 1.0


@dataclass(frozen=True)
class Rule:
    """A lifecycle rule as the projection needs it: its bit in a class mask, its age, its target."""

    bit: int
    after_days: int
    target: str


@dataclass(frozen=True)
class Holding:
    """Existing instances of one class, received on one day, on one tier now."""

    mask: int
    tier: str
    age_days: int
    objects: int
    bytes: int


@dataclass(frozen=True)
class Rate:
    """Ingest per day of one class."""

    mask: int
    objects_per_day: float
    bytes_per_day: float


@dataclass
class YearCost:
    """One row of the five-year table (currency units; TB of Part 10 data)."""

    year: int
    received_tb: float
    held_tb: float
    storage: float
    retrieval: float
    requests: float
    hot_only: float

    @property
    def total(self) -> float:
        return self.storage + self.retrieval + self.requests

    @property
    def savings(self) -> float:
        return self.hot_only - self.total


@dataclass
class Model:
    """Everything a projection needs; :meth:`monthly_storage` and :meth:`five_years` answer from it."""

    prices: dict[str, Price]
    rules: list[Rule]  # in priority order
    holdings: list[Holding]
    rates: list[Rate]
    ingest_tier: str = "hot"
    read_share: float = 0.0
    _steps: dict[tuple[int, str], list[tuple[float, str]]] = field(default_factory=dict, repr=False)
    _index: dict[tuple[int, str], tuple[list[int], list[tuple[int, int]]]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ where data is

    def tier_at(self, mask: int, age: float, current: str) -> str:
        """The tier an instance of class ``mask`` is on at ``age`` days, if it was on ``current`` before any rule."""
        for rule in self.rules:
            if mask & rule.bit and rule.after_days <= age:
                return rule.target
        return current

    def steps(self, mask: int, start: str) -> list[tuple[float, str]]:
        """The class's tier as a step function of age: [(from age, tier)], starting at age 0 on ``start``."""
        key = (mask, start)
        if key not in self._steps:
            ages = sorted({0, *(r.after_days for r in self.rules if mask & r.bit)})
            out: list[tuple[float, str]] = [(0.0, start)]
            for age in ages:
                tier = self.tier_at(mask, age, start)
                if not out or out[-1][1] != tier:
                    out.append((float(age), tier))
            self._steps[key] = out
        return self._steps[key]

    def bytes_by_tier(self, t: float) -> dict[str, float]:
        """Part 10 bytes on each tier ``t`` days from now: what is held today plus what arrives until then."""
        return self._by_tier(t, 0)

    def objects_by_tier(self, t: float) -> dict[str, float]:
        return self._by_tier(t, 1)

    def _by_tier(self, t: float, what: int) -> dict[str, float]:
        held: dict[str, float] = defaultdict(float)
        for (mask, tier), (ages, cumulative) in self._held().items():
            steps = self.steps(mask, tier)
            for i, (start, on) in enumerate(steps):
                end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
                # Held data of age in [start, end) at day t is of age in [start - t, end - t) today.
                lo, hi = bisect_left(ages, start - t), bisect_left(ages, end - t)
                if hi > lo:
                    held[on] += cumulative[hi][what] - cumulative[lo][what]
        for rate in self.rates:
            steps = self.steps(rate.mask, self.ingest_tier)
            per_day = rate.objects_per_day if what else rate.bytes_per_day
            for i, (start, tier) in enumerate(steps):
                end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
                # Data of age in [start, end) at day t arrived between t - end and t - start, and after now.
                length = max(0.0, min(end, t) - start)
                held[tier] += per_day * length
        return dict(held)

    def _held(self) -> dict[tuple[int, str], tuple[list[int], list[tuple[int, int]]]]:
        """Holdings per (class, tier): ages sorted, and running totals of (bytes, objects) before each."""
        if self._index is None:
            groups: dict[tuple[int, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
            for h in self.holdings:
                cell = groups[(h.mask, h.tier)][h.age_days]
                cell[0] += h.bytes
                cell[1] += h.objects
            self._index = {}
            for key, by_age in groups.items():
                ages = sorted(by_age)
                cumulative = [(0, 0)]
                for age in ages:
                    b, n = cumulative[-1]
                    cumulative.append((b + by_age[age][0], n + by_age[age][1]))
                self._index[key] = (ages, cumulative)
        return self._index

    def monthly_storage(self, t: float, hot_only: bool = False) -> float:
        """The storage bill of one month, ``t`` days from now (or had everything stayed on the ingest tier)."""
        held = self.bytes_by_tier(t)
        if hot_only:
            held = {self.ingest_tier: sum(held.values())}
        return sum(self.stored_gb(tier, b) * self.price(tier).gb_month for tier, b in held.items())

    def stored_gb(self, tier: str, part10_bytes: float) -> float:
        return part10_bytes * self.price(tier).ratio / GB

    def price(self, tier: str) -> Price:
        return self.prices.get(tier, Price())

    # ------------------------------------------------------------------ growth

    @property
    def bytes_per_day(self) -> float:
        return sum(r.bytes_per_day for r in self.rates)

    @property
    def objects_per_day(self) -> float:
        return sum(r.objects_per_day for r in self.rates)

    def moves_between(self, t0: float, t1: float) -> Iterable[tuple[str, str, float, float]]:
        """(source, target, objects, bytes) the rules move in days [t0, t1) from now."""
        for h in self.holdings:
            steps = self.steps(h.mask, h.tier)
            now = self.tier_at(h.mask, h.age_days, h.tier)
            if now != h.tier and t0 <= 0 < t1:
                yield h.tier, now, h.objects, h.bytes  # due now, not moved yet
            for i in range(1, len(steps)):
                at = steps[i][0] - h.age_days
                if t0 <= at < t1 and at > 0:
                    yield steps[i - 1][1], steps[i][1], h.objects, h.bytes
        for rate in self.rates:
            steps = self.steps(rate.mask, self.ingest_tier)
            for i in range(1, len(steps)):
                age = steps[i][0]
                # Arrivals s ≥ 0 with s + age in [t0, t1).
                length = max(0.0, (t1 - age) - max(0.0, t0 - age))
                if length:
                    yield steps[i - 1][1], steps[i][1], rate.objects_per_day * length, rate.bytes_per_day * length

    def year(self, y: int) -> YearCost:
        """Year ``y`` (1 = the coming twelve months): storage billed monthly at mid-month, moves, reads."""
        t0, t1 = days(12 * (y - 1)), days(12 * y)
        mids = [days(12 * (y - 1) + k + 0.5) for k in range(12)]
        storage = sum(self.monthly_storage(t) for t in mids)
        hot_storage = sum(self.monthly_storage(t, hot_only=True) for t in mids)
        ingest = self.price(self.ingest_tier)
        written = self.objects_per_day * (t1 - t0)
        requests = written * ingest.per_1000_requests / 1000
        hot_requests = requests
        retrieval = 0.0
        for source, target, objects, size in self.moves_between(t0, t1):
            requests += objects * (self.price(source).per_1000_requests + self.price(target).per_1000_requests) / 1000
            retrieval += self.stored_gb(source, size) * self.price(source).gb_retrieved
        hot_retrieval = 0.0
        if self.read_share:
            for t in mids:
                share = self.read_share / 12
                for tier, size in self.bytes_by_tier(t).items():
                    retrieval += share * size / GB * self.price(tier).gb_retrieved
                    hot_retrieval += share * size / GB * ingest.gb_retrieved
                for tier, n in self.objects_by_tier(t).items():
                    requests += share * n * self.price(tier).per_1000_requests / 1000
                    hot_requests += share * n * ingest.per_1000_requests / 1000
        held = sum(self.bytes_by_tier(t1).values())
        return YearCost(
            year=y,
            received_tb=self.bytes_per_day * (t1 - t0) / GB / TB_IN_GB,
            held_tb=held / GB / TB_IN_GB,
            storage=storage,
            retrieval=retrieval,
            requests=requests,
            hot_only=hot_storage + hot_retrieval + hot_requests,
        )

    def five_years(self) -> list[YearCost]:
        return [self.year(y) for y in range(1, 6)]


def tb_per_year(studies_per_day: float, average_study_gb: float) -> float:
    """The seed's sizing formula: TB/year ≈ studies/day × average study size in GB × 365 / 1024."""
    return studies_per_day * average_study_gb * DAYS_PER_YEAR / TB_IN_GB
