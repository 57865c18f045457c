"""The report page: :class:`ReportData` through ``templates/report.html.j2`` to one HTML string.

The markup, the inline style (``report.css``, included) and the charts (the threshold
sweep, the training curves: inline SVG) live in the templates; here is only what a
template should not compute: the charts' point coordinates, the rows of the per-class
table and the time format.
Autoescape is on, so every text read from a workdir (class names, stage names, paths)
is escaped by Jinja2. The page loads nothing: pictures are data URIs, the style is
inline, there is no script.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jinja2

from wsss_cli.report.collect import ReportData
from wsss_cli.report.curves import TrainingCurve
from wsss_cli.report.evaluations import Evaluation
from wsss_cli.report.pictures import LabelClass

TEMPLATE = "report.html.j2"
# how each number of metrics.jsonl is drawn: (legend, colour, dash pattern, right axis)
CURVE_STYLE = {
    "loss": ("loss", "#3f7fd4", "", False),
    "loss_cls": ("loss (cls)", "#2a9d8f", "5 3", False),
    "loss_mask": ("loss (mask)", "#8e6cc8", "2 2", False),
    "val_miou": ("val mIoU %", "#e07b39", "", True),
}


@dataclass
class SweepChart:
    """mIoU over the CAM background threshold, in SVG user units (y grows downwards)."""

    label: str
    key: str
    points: list[tuple[float, float]]  # (x, y) of each threshold, left to right
    first: float  # the smallest threshold
    last: float  # the largest threshold
    top: float  # the mIoU at the top of the plot
    best_x: float | None = None  # x of the best threshold's marker
    best_threshold: float | None = None
    width: int = 320
    height: int = 150
    pad: int = 28  # room for the axis labels, left and below


@dataclass
class CurveLine:
    """One number of ``metrics.jsonl`` over the epochs, in SVG user units."""

    label: str
    colour: str
    dash: str  # stroke-dasharray; empty = solid
    right: bool  # scaled to the right axis (mIoU %), else to the left one (loss)
    points: list[tuple[float, float]]  # one per epoch that has the number
    last: float  # the last value
    best: float | None = None  # the highest value of a right-axis line (mIoU)


@dataclass
class CurveChart:
    """A model's training curves: losses on the left axis, val mIoU on the right one."""

    stage: str
    key: str
    lines: list[CurveLine]
    first: int  # first epoch
    last: int  # last epoch
    epochs: int  # epochs recorded
    seconds: float | None
    loss_top: float | None  # the loss at the top of the plot; None without a loss line
    miou_top: float | None  # the mIoU at the top (100, or 1 for fractions); None without mIoU
    width: int = 320
    height: int = 160
    left: int = 44  # room for the left axis labels
    right: int = 36  # room for the right axis labels
    top: int = 10
    bottom: int = 26  # room for the epoch labels

    @property
    def plot_right(self) -> int:
        return self.width - self.right


@dataclass
class ClassRow:
    """One class in the per-class table: its IoU after each evaluation."""

    name: str
    rgb: tuple[int, int, int] | None  # its colour in the label maps, when its index is known
    values: list[float | None]
    best: float | None  # the value to highlight; None when there is nothing to compare


def render(report: ReportData) -> str:
    """The whole page as one self-contained HTML string."""
    evals = report.evaluations
    return _environment().get_template(TEMPLATE).render(
        title=f"wsss report: {report.workdir.name}",
        r=report,
        best_miou=max((e.miou for e in evals), default=None),
        charts=[c for c in (sweep_chart(e) for e in evals if e.sweep) if c is not None],
        curves=[c for c in (curve_chart(t) for t in report.curves) if c is not None],
        class_rows=class_rows(evals, report.classes),
    )


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("wsss_cli.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["duration"] = duration
    return env


def duration(value: object) -> str:
    """``12.5 s``, ``3 min 07 s``; empty for anything but a number."""
    if not isinstance(value, (int, float)):
        return ""
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{value:.1f} s"


def sweep_chart(ev: Evaluation) -> SweepChart | None:
    """The points of ``ev.sweep`` scaled into the plot area; None with fewer than two."""
    values = sorted((float(t), float(v)) for t, v in ev.sweep.items() if isinstance(v, (int, float)))
    if len(values) < 2:
        return None
    chart = SweepChart(ev.label.split(" (")[0], ev.key, [], values[0][0], values[-1][0],
                       max(v for _, v in values) or 1.0)
    span = (chart.last - chart.first) or 1.0

    def x(t: float) -> float:
        return chart.pad + (chart.width - chart.pad - 8) * (t - chart.first) / span

    def y(v: float) -> float:
        return chart.height - chart.pad - (chart.height - chart.pad - 10) * v / chart.top

    chart.points = [(x(t), y(v)) for t, v in values]
    if isinstance(ev.best_threshold, (int, float)):
        chart.best_threshold = float(ev.best_threshold)
        chart.best_x = x(chart.best_threshold)
    return chart


def curve_chart(curve: TrainingCurve) -> CurveChart | None:
    """The series of ``curve`` scaled into the plot area (a gap where an epoch lacks a
    number); None when there is nothing to draw."""
    losses = [v for key, values in curve.series.items() if not CURVE_STYLE[key][3] for v in values
              if v is not None]
    mious = [v for v in curve.series.get("val_miou", []) if v is not None]
    if not losses and not mious:
        return None
    chart = CurveChart(curve.stage, curve.key, [], curve.epochs[0], curve.epochs[-1], len(curve.epochs),
                       curve.seconds, max(max(losses), 1e-12) if losses else None,
                       (100.0 if max(mious) > 1 else 1.0) if mious else None)
    span = chart.last - chart.first
    inner = chart.height - chart.bottom - chart.top

    def x(epoch: int) -> float:
        if not span:
            return (chart.left + chart.plot_right) / 2
        return chart.left + (chart.plot_right - chart.left) * (epoch - chart.first) / span

    for key, values in curve.series.items():
        label, colour, dash, right = CURVE_STYLE[key]
        top = chart.miou_top if right else chart.loss_top
        known = [(e, v) for e, v in zip(curve.epochs, values, strict=True) if v is not None]
        points = [(x(e), chart.height - chart.bottom - inner * min(max(v / top, 0.0), 1.0)) for e, v in known]
        chart.lines.append(CurveLine(label, colour, dash, right, points, known[-1][1],
                                     max(v for _, v in known) if right else None))
    return chart


def class_rows(evals: list[Evaluation], classes: list[LabelClass]) -> list[ClassRow]:
    """The dataset's classes that some evaluation has, in class order, then any other
    class an evaluation names (e.g. one of another dataset)."""
    colours: dict[str, tuple[int, int, int]] = {}
    for c in classes:
        colours.setdefault(c.name, c.rgb)
    names = dict.fromkeys([*(n for n in colours if any(n in e.per_class for e in evals)),
                           *(n for e in evals for n in e.per_class)])
    rows = []
    for name in names:
        values = [e.per_class.get(name) for e in evals]
        best = max((v for v in values if v is not None), default=None) if len(evals) > 1 else None
        rows.append(ClassRow(name, colours.get(name), values, best))
    return rows
