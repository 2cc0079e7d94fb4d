"""Charts for the Monitoring page as plain geometry (pure): the template draws them as inline SVG, so
the page needs no chart library and works with no internet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 40, 24, 10, 24  # margins around the plot, in SVG units


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: float
    label: str


@dataclass(frozen=True)
class Series:
    """A line of the chart; `None` values break it, so a gap shows as a gap."""

    name: str
    css_class: str
    points: tuple[Point, ...]
    segments: tuple[tuple[Point, ...], ...]

    @property
    def paths(self) -> list[str]:
        return ["M" + " L".join(f"{p.x:.1f},{p.y:.1f}" for p in segment) for segment in self.segments]


@dataclass(frozen=True)
class Marker:
    """A vertical line at an event (a run, a promotion, a decay trigger)."""

    x: float
    kind: str
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    series: tuple[Series, ...]
    markers: tuple[Marker, ...]
    x_labels: tuple[tuple[float, str], ...]
    y_labels: tuple[tuple[float, str], ...]
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)

    @property
    def plot_left(self) -> float:
        return LEFT

    @property
    def plot_right(self) -> float:
        return self.width - RIGHT

    @property
    def plot_bottom(self) -> float:
        return self.height - BOTTOM


def _y(value: float, height: int) -> float:
    return TOP + (1.0 - min(max(value, 0.0), 1.0)) * (height - TOP - BOTTOM)


def _series(name: str, css_class: str, values: list[tuple[float, float | None, str]], height: int) -> Series:
    points, segments, current = [], [], []
    for x, value, label in values:
        if value is None:
            if current:
                segments.append(tuple(current))
            current = []
            continue
        point = Point(x=x, y=_y(value, height), value=value, label=label)
        points.append(point)
        current.append(point)
    if current:
        segments.append(tuple(current))
    return Series(name=name, css_class=css_class, points=tuple(points), segments=tuple(segments))


def _y_labels(height: int) -> tuple[tuple[float, str], ...]:
    return tuple((_y(v, height), f"{v:.0%}") for v in (0.0, 0.25, 0.5, 0.75, 1.0))


def time_chart(title: str, lines: dict[str, tuple[str, list[tuple[datetime, float | None]]]], start: datetime,
               end: datetime, markers: list[tuple[datetime, str, str]] = (), *, width: int = WIDTH,
               height: int = HEIGHT) -> Chart:
    """Shares (0..1) over time from `start` to `end`: `lines` maps a name to (css class, [(time, value)]);
    `markers` are (time, kind, label); events outside the period are left out."""
    span = max((end - start).total_seconds(), 1.0)
    left, right = LEFT, width - RIGHT

    def x(at: datetime) -> float:
        return left + (right - left) * (at - start).total_seconds() / span

    series = tuple(
        _series(name, css, [(x(at), value, f"{name} {at:%b %d}: {'n/a' if value is None else f'{value:.1%}'}")
                            for at, value in values if start <= at <= end], height)
        for name, (css, values) in lines.items())
    shown = tuple(Marker(x=x(at), kind=kind, label=label) for at, kind, label in markers if start <= at <= end)
    midnights = [datetime.combine(start.date(), time.min, start.tzinfo) + timedelta(days=i)
                 for i in range(int(span // 86_400) + 2)]
    midnights = [m for m in midnights if start <= m <= end]
    step = max(1, len(midnights) // 8)
    ticks = tuple((x(m), f"{m:%b %d}") for m in midnights[::step])
    return Chart(title=title, series=series, markers=shown, x_labels=ticks, y_labels=_y_labels(height),
                 width=width, height=height)


def run_chart(title: str, lines: dict[str, tuple[str, list[float | None]]], labels: list[str],
              promoted: list[bool], *, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """Shares over successive runs, evenly spaced, oldest first; a promoted run is marked."""
    count = len(labels)
    left, right = LEFT, width - RIGHT

    def x(i: int) -> float:
        return (left + right) / 2 if count == 1 else left + (right - left) * i / (count - 1)

    series = tuple(_series(name, css, [(x(i), v, f"{name} {labels[i]}: {'n/a' if v is None else f'{v:.1%}'}")
                                       for i, v in enumerate(values)], height)
                   for name, (css, values) in lines.items())
    marks = tuple(Marker(x=x(i), kind="promotion", label=f"promoted {labels[i]}") for i in range(count) if promoted[i])
    step = max(1, count // 6)
    ticks = tuple((x(i), labels[i]) for i in range(0, count, step))
    return Chart(title=title, series=series, markers=marks, x_labels=ticks, y_labels=_y_labels(height),
                 width=width, height=height)
