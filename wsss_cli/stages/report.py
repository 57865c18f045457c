"""report: one self-contained HTML page summarising a workdir.

The page has the stages recorded in ``state.json``, the mIoU after every evaluated
stage (``WORKDIR/eval/*.json`` and ``WORKDIR/pred/*/eval.json``), the per-class IoU
of each, and for a few images of a split the image, CAM, affinity label,
pseudo-label, prediction and ground truth side by side. Pictures are embedded as
data URIs and the style is inline, so the file can be mailed or archived on its own.
A missing or unreadable artifact is a placeholder on the page, never an error: the
report is most useful exactly when a run is half done.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask, voc_palette
from wsss_cli.errors import WsssError
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import Workdir, read_cams, write_bytes

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

THUMB = 240  # long side of the embedded pictures, in pixels: keeps the page small
STAGE_ORDER = ("train-cls", "dump-cams", "eval-cams", "make-aff-labels", "train-aff",
               "random-walk", "make-pseudo", "train-seg", "predict", "eval")
# evaluation file stems: (pattern, rank in the pipeline, label with {split})
EVAL_NAMES = (
    (r"cams_(?P<split>.+)", 0, "CAM ({split}{threshold})"),
    (r"pseudo_nocrf_(?P<split>.+)", 2, "random walk, no CRF ({split})"),
    (r"pseudo_(?P<split>.+)", 3, "pseudo-labels ({split})"),
    (r"(?:seg|pred)_(?P<split>.+)", 4, "segmentation net ({split})"),
)
IGNORE_COLOUR = (255, 255, 255)  # label 255 (unsure / ignored) is drawn white


@dataclass(frozen=True)
class ReportConfig:
    workdir: Path
    data: Path | None = None  # default: the data recorded in WORKDIR/config.toml, else WORKDIR/data
    split: str = "train"
    samples: int = 8
    out: Path | None = None  # default WORKDIR/report.html
    runtime: Runtime = Runtime()


@dataclass
class Evaluation:
    """One mIoU result shown on the page."""

    key: str  # where it came from, e.g. ``eval/cams_train.json``
    label: str
    miou: float
    per_class: dict[str, float | None]
    rank: tuple = ()
    images: int | None = None
    sweep: dict[str, float] = field(default_factory=dict)
    best_threshold: float | None = None


@dataclass
class Picture:
    """One cell of a sample row: an encoded picture or a placeholder."""

    caption: str
    uri: str | None = None  # data URI; None = missing
    note: str = "missing"
    size: tuple[int, int] | None = None  # (width, height) of the picture


# ---------------------------------------------------------------- reading the workdir


def read_state(workdir: Path) -> dict[str, Any]:
    if not (workdir / "state.json").is_file():
        raise WsssError(f"--workdir {workdir}: not a wsss workdir (no state.json)")
    return Workdir(workdir).state()


def resolve_data(cfg: ReportConfig, workdir: Path) -> VocDataset | None:
    """``--data``, else the first existing ``data`` of config.toml, else ``WORKDIR/data``.

    An explicit ``--data`` must be a dataset; a guessed one that is not is ignored,
    because the report is still useful without pictures of the images.
    """
    if cfg.data is not None:
        return VocDataset(Path(cfg.data))
    for candidate in [*_config_data_paths(workdir), workdir / "data"]:
        if candidate.is_dir():
            try:
                return VocDataset(candidate)
            except WsssError:
                continue
    return None


def _config_data_paths(workdir: Path) -> list[Path]:
    path = workdir / "config.toml"
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [Path(section["data"]) for section in config.values()
            if isinstance(section, dict) and isinstance(section.get("data"), str)]


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def collect_evaluations(workdir: Path) -> list[Evaluation]:
    """Every result with an ``miou`` in ``eval/*.json`` and ``pred/*/eval.json``, in pipeline order."""
    found: list[Evaluation] = []
    for path in sorted((workdir / "eval").glob("*.json")):
        found += _evaluations_of(path.stem, f"eval/{path.name}", _load_json(path))
    for path in sorted(workdir.glob("pred/*/eval.json")):
        found += _evaluations_of(f"pred_{path.parent.name}", f"pred/{path.parent.name}/eval.json",
                                 _load_json(path))
    return sorted(found, key=lambda e: e.rank)


def _evaluations_of(stem: str, key: str, obj: dict | None) -> list[Evaluation]:
    # summaries such as demo.json have no numeric top-level miou: their numbers are in the others
    if not obj or not isinstance(obj.get("miou"), (int, float)):
        return []
    label, rank, split = stem, 5, ""
    for pattern, pattern_rank, template in EVAL_NAMES:
        match = re.fullmatch(pattern, stem)
        if match:
            split, rank = match["split"], pattern_rank
            threshold = obj.get("best_threshold")
            threshold = f", threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else ""
            label = template.format(split=split, threshold=threshold)
            break
    main = Evaluation(key, label, float(obj["miou"]), dict(obj.get("per_class") or {}),
                      (rank, split != "train", split, stem), obj.get("images"),
                      dict(obj.get("sweep") or {}), obj.get("best_threshold"))
    crf = obj.get("crf")
    if not isinstance(crf, dict) or not isinstance(crf.get("miou"), (int, float)):
        return [main]
    # CAM + CRF sits between the CAMs and the random walk in the pipeline
    crf_eval = Evaluation(f"{key} (crf)", f"CAM + CRF ({split or stem})", float(crf["miou"]),
                          dict(crf.get("per_class") or {}), (1, *main.rank[1:]), obj.get("images"))
    return [main, crf_eval]


# ---------------------------------------------------------------- choosing and drawing samples


def artifact_paths(workdir: Path, split: str, image_id: str) -> dict[str, Path]:
    return {
        "cam": workdir / "cams" / f"{image_id}.npz",
        "aff": workdir / "aff_labels" / f"{image_id}.png",
        "pseudo": workdir / "pseudo" / f"{image_id}.png",
        "pred": workdir / "pred" / split / f"{image_id}.png",
    }


def choose_samples(workdir: Path, data: VocDataset | None, split: str, n: int) -> tuple[list[str], int]:
    """``n`` ids evenly spaced over the sorted ids with the most artifacts, and how many such ids.

    Deterministic, so that two reports of one workdir show the same images. Without a
    dataset the candidates are the ids that have any artifact.
    """
    if data is not None:
        ids = data.ids(split)
    else:
        folders = [workdir / "cams", workdir / "aff_labels", workdir / "pseudo", workdir / "pred" / split]
        ids = sorted({p.stem for f in folders for p in f.glob("*.*") if p.suffix in (".npz", ".png")})
    if not ids:
        return [], 0

    def count(image_id: str) -> int:
        have = sum(p.exists() for p in artifact_paths(workdir, split, image_id).values())
        return have + (data is not None and data.mask_path(image_id) is not None)

    counts = {i: count(i) for i in ids}
    # take the best-equipped ids, then the next level, until there are n candidates
    pool: list[str] = []
    for level in sorted(set(counts.values()), reverse=True):
        pool += [i for i in ids if counts[i] == level]
        if len(pool) >= n:
            break
    pool.sort()
    picks = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
    return [pool[i] for i in dict.fromkeys(picks.tolist())], len(pool)


def _picture(caption: str, rgb: np.ndarray, fmt: str) -> Picture:
    """A thumbnail of RGB uint8 ``rgb`` encoded as a base64 PNG or JPEG data URI."""
    return Picture(caption, _data_uri(rgb, fmt), size=(rgb.shape[1], rgb.shape[0]))


def _data_uri(rgb: np.ndarray, fmt: str) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[..., ::-1], params)
    if not ok:
        raise ValueError("cv2.imencode failed")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def thumbnail(array: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Shrink so that the long side is at most THUMB; label maps keep exact values."""
    h, w = array.shape[:2]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def colour_labels(mask: np.ndarray) -> np.ndarray:
    palette = voc_palette()
    palette[255] = IGNORE_COLOUR
    return palette[mask]


def cam_heatmap(cams: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """Max over classes as a JET colour map, half-blended over the image when there is one."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    peak = np.clip(np.nan_to_num(peak), 0, 1)
    heat = cv2.applyColorMap((peak * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    if image is None:
        return heat
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 0.5, heat, 0.5, 0)


def _names(classes: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[c] if 0 <= c < len(names) else f"class {c}" for c in classes)


def sample_row(workdir: Path, data: VocDataset | None, split: str, image_id: str,
               names: Sequence[str]) -> list[Picture]:
    """The six pictures of one image; each failure only turns its own cell into a placeholder."""
    paths = artifact_paths(workdir, split, image_id)
    image = _try(lambda: data.read_image(image_id)) if data is not None else None
    pictures = [Picture("image") if image is None else
                _picture(f"image {image.shape[1]}×{image.shape[0]}", thumbnail(image), "jpeg")]
    cams = _try(lambda: read_cams(paths["cam"])) if paths["cam"].exists() else None
    if cams is None:
        pictures.append(Picture("CAM", note=_note(paths["cam"])))
    else:
        heat = thumbnail(cam_heatmap(cams[1], image))
        pictures.append(_picture(f"CAM: {_names(cams[0].tolist(), names) or 'no class'}", heat, "jpeg"))
    gt_path = data.mask_path(image_id) if data is not None else None
    for caption, path in (("affinity label", paths["aff"]), ("pseudo-label", paths["pseudo"]),
                          ("prediction", paths["pred"]), ("ground truth", gt_path)):
        pictures.append(_label_picture(caption, path, names))
    return pictures


def _label_picture(caption: str, path: Path | None, names: Sequence[str]) -> Picture:
    mask = _try(lambda: read_mask(path)) if path is not None and path.exists() else None
    if mask is None:
        return Picture(caption, note=_note(path))
    present = [int(c) for c in np.unique(mask) if 0 < c < 255]
    text = f"{caption}: {_names(present, names)}" if present else caption
    return _picture(text, thumbnail(colour_labels(mask), nearest=True), "png")


def _note(path: Path | None) -> str:
    return "unreadable" if path is not None and path.exists() else "missing"


def _try(load: Any) -> Any:
    """``load()``, or None when the artifact is unreadable (a WsssError from the readers)."""
    try:
        return load()
    except WsssError:
        return None


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 background:#f4f5f8;margin:0;padding:24px 32px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
section,header{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:16px 20px;
 margin:0 auto 18px;max-width:1400px;box-shadow:0 1px 2px #0000000d}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0 0}
dl.meta dt{color:#677084}dl.meta dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse}th,td{padding:5px 10px;text-align:left;vertical-align:middle}
thead th{border-bottom:2px solid #c9ced8;font-weight:600;font-size:13px;color:#444c5c}
tbody tr:nth-child(even){background:#f7f8fb}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#8a92a3;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
 background:#e3e6ec;color:#4a5263}.badge.done{background:#d9f2e1;color:#1b6b36}
.badge.failed{background:#fbdada;color:#9b1c1c}.badge.running{background:#fdeccc;color:#8a5300}
.bar{position:relative;min-width:120px;height:20px;background:#eef0f4;border-radius:3px}
.bar i{position:absolute;left:0;top:0;bottom:0;background:#7aa6e0;border-radius:3px}
.bar b{position:relative;padding-left:6px;font-weight:500;font-size:12px;line-height:20px;
 font-variant-numeric:tabular-nums}
.bar.best i{background:#3f7fd4}.bar.best b{font-weight:700}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #0003;border-radius:2px;
 vertical-align:-1px;margin-right:6px}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:0 0 12px;font-size:13px}
.flex{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.sample{display:grid;grid-template-columns:96px repeat(6,minmax(0,1fr));gap:8px;
 padding:10px 0;border-top:1px solid #e6e9ef}
.sample .id{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all;padding-top:4px}
figure{margin:0}figure img{display:block;width:100%;height:auto;border:1px solid #cfd4dc;
 border-radius:3px;background:#fff}
figure img.labels{image-rendering:pixelated}
figcaption{font-size:11.5px;color:#4a5263;margin-top:3px;line-height:1.3}
.missing{aspect-ratio:1;display:flex;align-items:center;justify-content:center;background:#f0f1f4;
 border:1px dashed #c3c8d2;border-radius:3px;color:#9aa1b0;font-size:22px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _bar(value: float | None, best: bool = False) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    width = min(max(value, 0.0), 100.0)
    return (f'<div class="bar{" best" if best else ""}"><i style="width:{width:.1f}%"></i>'
            f"<b>{value:.2f}</b></div>")


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{value:.1f} s"


def header_html(workdir: Path, data: VocDataset | None, split: str, state: dict) -> str:
    total = sum(v.get("seconds", 0) for v in state.values()
                if isinstance(v, dict) and isinstance(v.get("seconds"), (int, float)))
    rows = [("workdir", workdir.resolve()), ("dataset", data.root.resolve() if data else "none found"),
            ("split shown", split), ("stage time", _seconds(total) or "—"),
            ("generated", time.strftime("%Y-%m-%d %H:%M:%S"))]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<header><h1>wsss report</h1><dl class="meta">{items}</dl></header>'


def _stage_rank(name: str) -> tuple[int, str]:
    base = name.split(":")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), name)


def stages_html(state: dict) -> str:
    rows = []
    for name in sorted(state, key=_stage_rank):
        entry = state[name] if isinstance(state[name], dict) else {}
        status = str(entry.get("status", "?"))
        done = entry.get("count", entry.get("images"))
        progress = f"{done}/{entry['total']}" if "total" in entry else ("" if done is None else done)
        rows.append(f'<tr><td>{_e(name)}</td><td><span class="badge {_e(status)}">{_e(status)}</span></td>'
                    f'<td class="num">{_e(_seconds(entry.get("seconds")))}</td>'
                    f'<td class="num">{_e(progress)}</td>'
                    f'<td class="muted">{_e(str(entry.get("updated", "")).replace("T", " "))}</td></tr>')
    body = "".join(rows) or '<tr><td colspan="5" class="muted">no stage recorded yet</td></tr>'
    return ("<section><h2>Stages</h2><table><thead><tr><th>stage</th><th>status</th><th>time</th>"
            f"<th>images</th><th>updated</th></tr></thead><tbody>{body}</tbody></table></section>")


def miou_html(evals: list[Evaluation]) -> str:
    if not evals:
        return '<section><h2>mIoU</h2><p class="muted">No evaluation in eval/ or pred/*/ yet.</p></section>'
    best = max(e.miou for e in evals)
    rows = "".join(f"<tr><td>{_e(e.label)}</td><td>{_bar(e.miou, e.miou == best)}</td>"
                   f'<td class="num">{_e(e.images if e.images is not None else "")}</td>'
                   f'<td class="muted">{_e(e.key)}</td></tr>' for e in evals)
    table = ("<table><thead><tr><th>after</th><th>mIoU %</th><th>images</th><th>from</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    sweeps = "".join(sweep_svg(e) for e in evals if e.sweep)
    return f'<section><h2>mIoU</h2><div class="flex">{table}{sweeps}</div></section>'


def sweep_svg(ev: Evaluation) -> str:
    """mIoU over the CAM background threshold as an inline SVG line (no script needed)."""
    points = sorted((float(t), float(v)) for t, v in ev.sweep.items() if isinstance(v, (int, float)))
    if len(points) < 2:
        return ""
    w, h, pad = 320, 150, 28
    t0, t1 = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1.0
    x = lambda t: pad + (w - pad - 8) * (t - t0) / ((t1 - t0) or 1)  # noqa: E731
    y = lambda v: h - pad - (h - pad - 10) * v / top  # noqa: E731
    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    marker = ""
    if isinstance(ev.best_threshold, (int, float)):
        bx = x(ev.best_threshold)
        marker = (f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="10" y2="{h - pad}" stroke="#d9534f" '
                  f'stroke-dasharray="3 3"/><text x="{bx - 4:.1f}" y="{h - pad - 6}" text-anchor="end" '
                  f'font-size="11" fill="#d9534f">best {ev.best_threshold:.2f}</text>')
    return (f'<figure><svg width="{w}" height="{h}" role="img" font-family="sans-serif">'
            f'<rect x="{pad}" y="10" width="{w - pad - 8}" height="{h - pad - 10}" fill="#f7f8fb"/>'
            f'<polyline points="{line}" fill="none" stroke="#3f7fd4" stroke-width="2"/>{marker}'
            f'<text x="{pad}" y="{h - 10}" font-size="11" fill="#677084">{t0:.2f}</text>'
            f'<text x="{w - 8}" y="{h - 10}" font-size="11" fill="#677084" text-anchor="end">{t1:.2f}</text>'
            f'<text x="{pad - 4}" y="18" font-size="11" fill="#677084" text-anchor="end">{top:.0f}</text>'
            f'<text x="{pad - 4}" y="{h - pad}" font-size="11" fill="#677084" text-anchor="end">0</text>'
            f'<text x="{(w + pad) / 2:.0f}" y="{h - 10}" font-size="11" fill="#677084" '
            'text-anchor="middle">threshold</text>'
            f"</svg><figcaption>{_e(ev.label.split(' (')[0])} mIoU over the background threshold "
            f"({_e(ev.key)})</figcaption></figure>")


def per_class_html(evals: list[Evaluation], classes: Sequence[str]) -> str:
    if not evals:
        return ""
    names = list(dict.fromkeys([*(n for n in classes if any(n in e.per_class for e in evals)),
                                *(n for e in evals for n in e.per_class)]))
    palette = colour_labels(np.arange(256, dtype=np.uint8))
    head = "".join(f"<th>{_e(e.label)}</th>" for e in evals)
    rows = []
    for name in names:
        # the swatch is the class's colour in the label maps below, when its index is known
        swatch = ""
        if name in classes:
            r, g, b = (int(c) for c in palette[classes.index(name)])
            swatch = f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'
        values = [e.per_class.get(name) for e in evals]
        best = max((v for v in values if v is not None), default=None)
        cells = "".join(f"<td>{_bar(v, v is not None and v == best and len(evals) > 1)}</td>" for v in values)
        rows.append(f"<tr><td>{swatch}{_e(name)}</td>{cells}</tr>")
    means = "".join(f"<td>{_bar(e.miou)}</td>" for e in evals)
    rows.append(f"<tr><td><b>mean</b></td>{means}</tr>")
    return (f"<section><h2>Per-class IoU %</h2><table><thead><tr><th>class</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def legend_html(names: Sequence[str]) -> str:
    palette = colour_labels(np.arange(len(names), dtype=np.uint8))
    items = [f'<span><span class="swatch" style="background:rgb{tuple(int(c) for c in palette[i])}">'
             f"</span>{_e(n)}</span>" for i, n in enumerate(names)]
    items.append('<span><span class="swatch" style="background:#fff"></span>unsure / ignored (255)</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def figure_html(picture: Picture, aspect: tuple[int, int]) -> str:
    if picture.uri is None:
        # as tall as the row's pictures, so that the captions stay aligned
        return (f'<figure><div class="missing" style="aspect-ratio:{aspect[0]}/{aspect[1]}">—</div>'
                f"<figcaption>{_e(picture.caption)} <span class=\"muted\">({_e(picture.note)})</span>"
                "</figcaption></figure>")
    labels = ' class="labels"' if picture.uri.startswith("data:image/png") else ""
    return (f'<figure><img{labels} src="{picture.uri}" alt="{_e(picture.caption)}">'
            f"<figcaption>{_e(picture.caption)}</figcaption></figure>")


def _row_aspect(pictures: list[Picture]) -> tuple[int, int]:
    return next((p.size for p in pictures if p.size is not None), (1, 1))


def samples_html(rows: list[tuple[str, list[Picture]]], names: Sequence[str], split: str,
                 total: int) -> str:
    title = f"<h2>Samples: {len(rows)} image(s) of split {_e(split)}</h2>"
    if not rows:
        return f'<section>{title}<p class="muted">No image or artifact of this split found.</p></section>'
    body = "".join(f'<div class="sample"><div class="id">{_e(image_id)}</div>'
                   f"{''.join(figure_html(p, _row_aspect(pictures)) for p in pictures)}</div>"
                   for image_id, pictures in rows)
    note = (f'<p class="muted">Evenly spaced over the {total} ids with the most artifacts. '
            "CAM: largest class score per pixel (blue 0 to red 1) over the image.</p>")
    return f"<section>{title}{note}{legend_html(names)}{body}</section>"


def page_html(title: str, parts: Sequence[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# ---------------------------------------------------------------- the stage


def class_names(data: VocDataset | None, evals: list[Evaluation]) -> tuple[str, ...]:
    """The dataset's classes, else those of an evaluation (its per-class IoU is written in
    class order, background first)."""
    if data is not None:
        return tuple(data.classes)
    for ev in evals:
        if ev.per_class:
            return tuple(ev.per_class)
    return ("background",)


def run(cfg: ReportConfig) -> Path:
    """Write the report (default ``WORKDIR/report.html``) and return its path."""
    workdir = Path(cfg.workdir)
    state = read_state(workdir)
    data = resolve_data(cfg, workdir)
    evals = collect_evaluations(workdir)
    names = class_names(data, evals)
    ids, pool_size = choose_samples(workdir, data, cfg.split, cfg.samples)
    rows = [(i, sample_row(workdir, data, cfg.split, i, names))
            for i in cfg.runtime.progress(ids, "report")]
    parts = [header_html(workdir, data, cfg.split, state), stages_html(state), miou_html(evals),
             per_class_html(evals, names),
             samples_html(rows, names, cfg.split, pool_size)]
    out = Path(cfg.out) if cfg.out is not None else workdir / "report.html"
    write_bytes(out, page_html(f"wsss report: {workdir.resolve().name}", parts).encode())
    return out
