"""The projection's arithmetic on a model written by hand: exact bytes per tier, costs and moves."""

from __future__ import annotations

import pytest

from archive.costs.projection import GB, Holding, Model, Price, Rate, Rule, days, tb_per_year

PRICES = {
    "hot": Price(gb_month=0.02, per_1000_requests=0.005),
    "cold": Price(gb_month=0.004, gb_retrieved=0.01, per_1000_requests=0.05, ratio=0.5),
}
CT_TO_COLD = Rule(bit=1, after_days=90, target="cold")


def model(rules: list[Rule], holdings: list[Holding] | None = None) -> Model:
    """1 GB a day of CT (class 1: the rule matches) and 1 GB a day of the rest (class 0), 1,000 objects each."""
    return Model(
        prices=PRICES,
        rules=rules,
        holdings=holdings or [],
        rates=[Rate(0, 1000, GB), Rate(1, 1000, GB)],
    )


def test_the_sizing_formula_is_the_seeds() -> None:
    assert tb_per_year(100, 0.5) == 100 * 0.5 * 365 / 1024


def test_a_year_of_ingest_lands_where_the_rule_puts_it() -> None:
    m = model([CT_TO_COLD])
    held = m.bytes_by_tier(days(12))
    assert days(12) == 365
    assert held == {"hot": 365 * GB + 90 * GB, "cold": 275 * GB}
    # hot: 455 GB at 0.02; cold: 275 GB stored at half size at 0.004
    assert m.monthly_storage(365) == pytest.approx(455 * 0.02 + 137.5 * 0.004, rel=1e-12)
    assert m.monthly_storage(365, hot_only=True) == pytest.approx(730 * 0.02, rel=1e-12)


def test_without_rules_everything_stays_hot() -> None:
    m = model([])
    assert m.bytes_by_tier(365) == {"hot": 730 * GB}


def test_existing_data_ages_into_the_rule() -> None:
    held = [Holding(mask=1, tier="hot", age_days=80, objects=10, bytes=10 * GB)]
    m = model([CT_TO_COLD], held)
    assert m.bytes_by_tier(5)["hot"] == 5 * GB + 5 * GB + 10 * GB  # 80 + 5 < 90: still hot
    assert m.bytes_by_tier(10)["cold"] == 10 * GB  # 90 days old: moved
    moves = list(m.moves_between(0, 365))
    # the holding at day 10, then every CT day that turns 90 within the year: arrivals 0 … 275 days from now
    assert moves[0] == ("hot", "cold", 10, 10 * GB)
    assert moves[1] == ("hot", "cold", 1000 * 275, 275 * GB)


def test_the_first_rule_by_priority_decides() -> None:
    # A later, earlier-acting rule to "warm" is overtaken at 90 days by the first rule.
    rules = [CT_TO_COLD, Rule(bit=2, after_days=30, target="warm")]
    m = Model(prices=PRICES, rules=rules, holdings=[], rates=[Rate(3, 0, GB)])
    assert m.bytes_by_tier(365) == {"hot": 30 * GB, "warm": 60 * GB, "cold": 275 * GB}
    assert m.tier_at(3, 29, "hot") == "hot"
    assert m.tier_at(3, 30, "hot") == "warm"
    assert m.tier_at(3, 90, "hot") == "cold"


def test_the_five_year_table_adds_storage_retrieval_and_requests() -> None:
    m = model([CT_TO_COLD])
    first = m.year(1)
    assert first.received_tb == pytest.approx(730 / 1024, rel=1e-12)
    assert first.held_tb == pytest.approx(730 / 1024, rel=1e-12)
    # Storage month by month at mid-month: t = (k + 0.5) × 365/12 days.
    expected = 0.0
    for k in range(12):
        t = (k + 0.5) * 365 / 12
        cold = max(0.0, t - 90)
        expected += (t + min(t, 90)) * 0.02 + cold * 0.5 * 0.004
    assert first.storage == pytest.approx(expected, rel=1e-12)
    # Requests: 2,000 objects a day written to hot; 275 days of CT moved (a read on hot, a write on cold).
    assert first.requests == pytest.approx(2000 * 365 * 0.005 / 1000 + 1000 * 275 * (0.005 + 0.05) / 1000)
    assert first.retrieval == 0.0  # hot is free to read; nothing is read back from cold
    assert first.total == first.storage + first.requests
    assert first.savings == pytest.approx(first.hot_only - first.total)
    years = m.five_years()
    assert [y.year for y in years] == [1, 2, 3, 4, 5]
    assert years[4].held_tb == pytest.approx(5 * 730 / 1024, rel=1e-12)


def test_reads_at_the_assumed_share_cost_retrieval_on_the_tier_read() -> None:
    m = Model(prices=PRICES, rules=[], holdings=[Holding(0, "cold", 400, 100, 12 * GB)], rates=[], read_share=0.5)
    year = m.year(1)
    # Half of the 12 GB on cold read back over the year, at 0.01 a GB, on Part 10 bytes.
    assert year.retrieval == pytest.approx(12 * 0.5 * 0.01, rel=1e-12)
    assert year.requests == pytest.approx(100 * 0.5 * 0.05 / 1000, rel=1e-12)


@pytest.mark.parametrize(
    ("top", "labels"),
    [
        (0.07, ["0.0000", "0.0175", "0.0350", "0.0525", "0.0700"]),
        (1234.0, ["0", "308", "617", "926", "1,234"]),
    ],
)
def test_the_cost_chart_scale_shows_significant_digits(top: float, labels: list[str]) -> None:
    from archive.costs.charts import line_chart

    chart = line_chart([("x", "line-rules", [0.0, top])])
    assert [level["label"] for level in chart["levels"]] == labels
    assert chart["lines"][0]["points"].startswith("40.0,200.0 ")
