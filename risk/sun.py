"""Sunrise and sunset from latitude and longitude: NOAA's solar position equations, no dependencies.

The equations are those of NOAA's Solar Calculator (Global Monitoring Laboratory, after Meeus,
"Astronomical Algorithms"): the sun's declination and the equation of time from the Julian
century, then the hour angle at which the sun's upper limb touches the horizon (zenith 90.833
degrees: 0.833 for refraction and the solar radius). Each event is recomputed at its own
estimated instant twice, which brings it to well within a minute of published tables for
latitudes below the polar circles (validation refuses |latitude| > 65, where polar day or
night would leave a date without a sunrise or sunset).
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache
from zoneinfo import ZoneInfo

ZENITH_DEG = 90.833
MAX_ABS_LATITUDE = 65.0
SUN_EVENTS = ("sunrise", "sunset")


def _sun(jd: float) -> tuple[float, float]:
    """(declination in degrees, equation of time in minutes) at Julian day `jd`."""
    t = (jd - 2451545.0) / 36525.0  # Julian century
    l0 = (280.46646 + t * (36000.76983 + t * 0.0003032)) % 360.0  # geometric mean longitude
    m = 357.52911 + t * (35999.05029 - 0.0001537 * t)  # geometric mean anomaly
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)  # eccentricity of Earth's orbit
    mr = math.radians(m)
    c = (math.sin(mr) * (1.914602 - t * (0.004817 + 0.000014 * t)) + math.sin(2 * mr) * (0.019993 - 0.000101 * t)
         + math.sin(3 * mr) * 0.000289)  # equation of the centre
    omega = math.radians(125.04 - 1934.136 * t)
    apparent = l0 + c - 0.00569 - 0.00478 * math.sin(omega)  # apparent longitude
    obliq0 = 23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0
    obliq = math.radians(obliq0 + 0.00256 * math.cos(omega))
    decl = math.degrees(math.asin(math.sin(obliq) * math.sin(math.radians(apparent))))
    y = math.tan(obliq / 2.0) ** 2
    l0r = math.radians(l0)
    eqt = 4.0 * math.degrees(y * math.sin(2 * l0r) - 2 * e * math.sin(mr) + 4 * e * y * math.sin(mr) * math.cos(2 * l0r)
                             - 0.5 * y * y * math.sin(4 * l0r) - 1.25 * e * e * math.sin(2 * mr))
    return decl, eqt


def _utc_event(day: dt.date, lat: float, lon: float, event: str) -> float | None:
    """POSIX seconds of the event nearest the solar noon of UTC date `day`, or None (no such event that day)."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()
    minutes = 720.0 - 4.0 * lon  # first guess: mean solar noon
    latr = math.radians(lat)
    for _ in range(3):
        jd = (midnight + minutes * 60.0) / 86400.0 + 2440587.5
        decl, eqt = _sun(jd)
        d = math.radians(decl)
        cos_ha = math.cos(math.radians(ZENITH_DEG)) / (math.cos(latr) * math.cos(d)) - math.tan(latr) * math.tan(d)
        if not -1.0 <= cos_ha <= 1.0:
            return None  # polar day or night
        ha = math.degrees(math.acos(cos_ha))
        noon = 720.0 - 4.0 * lon - eqt
        minutes = noon - 4.0 * ha if event == "sunrise" else noon + 4.0 * ha
    return midnight + minutes * 60.0


@lru_cache(maxsize=4096)
def sun_event(day: dt.date, lat: float, lon: float, event: str, zone: str = "UTC") -> float | None:
    """POSIX seconds of `event` ("sunrise" or "sunset") on local date `day` in timezone `zone`, or None."""
    if event not in SUN_EVENTS:
        raise ValueError(f"unknown sun event {event!r}; use sunrise or sunset")
    tz = ZoneInfo(zone)
    guess = day
    for _ in range(3):  # the UTC date whose event falls on the local date (they differ far from Greenwich)
        t = _utc_event(guess, lat, lon, event)
        if t is None:
            return None
        local = dt.datetime.fromtimestamp(t, tz).date()
        if local == day:
            return t
        guess = guess + (day - local)
    return None
