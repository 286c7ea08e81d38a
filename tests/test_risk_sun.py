"""Sunrise/sunset computed per date (NOAA's equations) and schedule windows bounded by them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.config_base import ConfigError
from cluster.messages import OrderIntent, RejectReason
from risk.engine import RiskEngine
from risk.limits import ScheduleWindow
from risk.sun import sun_event

S = 1_000_000_000
LONDON = (51.50853, -0.12574)
JERUSALEM = (31.7683, 35.2137)


# Published by timeanddate.com for London (UTC), as quoted by the astral project's tests.
@pytest.mark.parametrize("day,sunrise,sunset", [
    (dt.date(2015, 1, 1), "08:06", "16:01"),
    (dt.date(2015, 12, 1), "07:43", "15:55"),
    (dt.date(2015, 12, 25), "08:05", "15:55"),
    (dt.date(2019, 8, 29), "05:08", "18:54"),
])
def test_sunrise_and_sunset_match_published_values_within_two_minutes(day, sunrise, sunset):
    for event, hhmm in (("sunrise", sunrise), ("sunset", sunset)):
        got = sun_event(day, *LONDON, event, "Europe/London")
        want = dt.datetime.combine(day, dt.time.fromisoformat(hhmm), dt.timezone.utc).timestamp()
        assert got is not None and abs(got - want) <= 120, (day, event, got - want)


def test_far_east_and_far_west_events_fall_on_the_asked_local_date():
    sydney = sun_event(dt.date(2024, 1, 1), -33.87, 151.21, "sunrise", "Australia/Sydney")
    local = dt.datetime.fromtimestamp(sydney, ZoneInfo("Australia/Sydney"))
    assert local.date() == dt.date(2024, 1, 1) and 5 <= local.hour <= 6  # ~05:47 AEDT
    honolulu = sun_event(dt.date(2024, 1, 1), 21.31, -157.86, "sunset", "Pacific/Honolulu")
    local = dt.datetime.fromtimestamp(honolulu, ZoneInfo("Pacific/Honolulu"))
    assert local.date() == dt.date(2024, 1, 1) and local.hour == 18  # ~18:01 HST


def _at(local: str) -> int:
    return int(dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Asia/Jerusalem")).timestamp() * S)


def _engine(window: ScheduleWindow) -> RiskEngine:
    section = RiskSection(defaults=RiskLimits(), schedules=[window], max_drawdown_pct=None, stop_loss_atr=None)
    section.validate({"BTCUSDT"}, None, {"paper"})
    return RiskEngine(section, [SymbolSection(symbol="BTCUSDT", venue="paper", price=100.0)], ["paper"])


def _paused(eng: RiskEngine, local: str) -> bool:
    now = _at(local)
    eng.set_mark("BTCUSDT", 100.0, now)
    d = eng.check(OrderIntent(strategy="s1", venue="paper", symbol="BTCUSDT", qty=1.0, price=100.0), now)
    assert d.approved or d.reason is RejectReason.TRADING_PAUSED, d
    return not d.approved


def test_friday_sunset_to_saturday_sunset_in_jerusalem_follows_the_dates():
    pause = ScheduleWindow(name="shabbat", scope="global", kind="pause", timezone="Asia/Jerusalem",
                           start="fri sunset", end="sat sunset", latitude=JERUSALEM[0], longitude=JERUSALEM[1])
    eng = _engine(pause)
    # December: sunset about 16:39 local; June: about 19:47.
    assert not _paused(eng, "2024-12-20T16:30")  # Friday, before sunset
    assert _paused(eng, "2024-12-20T17:00")
    assert _paused(eng, "2024-12-21T16:30")  # Saturday, before sunset
    assert not _paused(eng, "2024-12-21T17:00")
    assert not _paused(eng, "2024-06-21T19:30")  # Friday: the sun is still up at 19:30
    assert _paused(eng, "2024-06-21T20:00")
    assert _paused(eng, "2024-06-22T19:30")
    assert not _paused(eng, "2024-06-22T20:00")
    assert not _paused(eng, "2024-06-19T12:00")  # a Wednesday


def test_offsets_from_sunset_and_daily_sun_windows():
    pause = ScheduleWindow(name="candles", scope="global", kind="pause", timezone="Asia/Jerusalem",
                           start="fri sunset-40m", end="sat sunset+40m", latitude=JERUSALEM[0],
                           longitude=JERUSALEM[1])
    eng = _engine(pause)
    assert _paused(eng, "2024-12-20T16:05")  # 34 minutes before sunset
    assert not _paused(eng, "2024-12-20T15:55")
    assert _paused(eng, "2024-12-21T17:15")  # 36 minutes after sunset
    assert not _paused(eng, "2024-12-21T17:25")
    daylight = ScheduleWindow(name="daylight", scope="global", kind="trading", timezone="Asia/Jerusalem",
                              days=["mon", "tue", "wed", "thu", "fri"], start="sunrise", end="sunset",
                              latitude=JERUSALEM[0], longitude=JERUSALEM[1])
    eng = _engine(daylight)
    assert not _paused(eng, "2024-06-19T19:40")  # Wednesday, sun up
    now = _at("2024-12-18T17:00")  # Wednesday after sunset: outside the trading window
    eng.set_mark("BTCUSDT", 100.0, now)
    d = eng.check(OrderIntent(strategy="s1", venue="paper", symbol="BTCUSDT", qty=1.0, price=100.0), now)
    assert d.reason is RejectReason.OUTSIDE_TRADING_HOURS and "daylight" in d.detail


@pytest.mark.parametrize("window,key,words", [
    (ScheduleWindow(name="x", start="fri sunset", end="sat sunset"), "risk.schedules[0].latitude", "latitude"),
    (ScheduleWindow(name="x", start="fri sunset", end="sat sunset", latitude=70.0, longitude=20.0),
     "risk.schedules[0].latitude", "polar"),
    (ScheduleWindow(name="x", start="fri sunset", end="sat sunset", latitude=30.0, longitude=200.0),
     "risk.schedules[0].longitude", "-180 and 180"),
    (ScheduleWindow(name="x", start="fri sunset+x", end="sat sunset", latitude=30.0, longitude=20.0),
     "risk.schedules[0]", "sunrise or sunset"),
    (ScheduleWindow(name="x", start="fri sunset+400m", end="sat sunset", latitude=30.0, longitude=20.0),
     "risk.schedules[0]", "within 360 minutes"),
])
def test_sun_window_validation_names_the_key(window, key, words):
    with pytest.raises(ConfigError) as exc:
        RiskSection(schedules=[window]).validate({"BTCUSDT"}, None, {"paper"})
    assert exc.value.key == key and words in str(exc.value), str(exc.value)
