"""One look for every figure: the Okabe–Ito palette (colour-blind safe), markers as a second cue, PNG + PDF."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from harness_plugin.io import apply_umask

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}

SAMPLER_ORDER = ("antidistillation", "temperature", "permutation")
SAMPLER_STYLE = {
    "antidistillation": {"color": OKABE_ITO["vermillion"], "marker": "o", "label": "Antidistillation"},
    "temperature": {"color": OKABE_ITO["blue"], "marker": "s", "label": "Temperature"},
    "permutation": {"color": OKABE_ITO["bluish_green"], "marker": "^", "label": "Permutation"},
}
# The curve of another Δ method (`antidistillation-head`, from `grid.extra_penalties`): its sampler's colour,
# this marker and a dashed line, labelled with the method.
EXTRA_PENALTY_MARKER = "D"


def curve_style(curve: str) -> dict[str, str]:
    """Colour, marker, line style and label of a curve: a sampler, or `sampler-penalty` for another Δ method."""
    sampler, _, penalty = curve.partition("-")
    style = {**SAMPLER_STYLE[sampler], "linestyle": "-"}
    if penalty:
        style.update(marker=EXTRA_PENALTY_MARKER, linestyle="--", label=f"{style['label']} ({penalty})")
    return style


def curve_order(curve: str) -> tuple[int, str]:
    """Sort key: the samplers in SAMPLER_ORDER, each followed by its other Δ methods' curves."""
    sampler, _, penalty = curve.partition("-")
    return SAMPLER_ORDER.index(sampler), penalty


def is_known_curve(curve: str | None) -> bool:
    return bool(curve) and str(curve).partition("-")[0] in SAMPLER_ORDER


DTYPE_STYLE = {
    "float32": {"color": OKABE_ITO["blue"], "marker": "o", "label": "fp32"},
    "bfloat16": {"color": OKABE_ITO["orange"], "marker": "s", "label": "bf16"},
    "float16": {"color": OKABE_ITO["reddish_purple"], "marker": "^", "label": "fp16"},
}
BASELINE_COLOR = "#555555"


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 200,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "pdf.fonttype": 42,  # TrueType in PDFs, so text stays editable and searchable
    })
    return plt


# Last path parts that say only a model's role: the folder above them says which model it is (a toy world's hash).
_ROLE_FOLDERS = frozenset({"teacher", "proxy", "student", "model"})


def short_model_name(name: str | None) -> str:
    """`org/Model-7B` or `/some/path/model` -> the last path part, which is what a reader recognises; a role folder
    keeps its parent (`~/.cache/antidistill/toy_world/ade78a1448931d18/proxy` -> `ade78a14/proxy`)."""
    if not name:
        return "?"
    parts = [part for part in str(name).rstrip("/").split("/") if part]
    if not parts:
        return str(name)
    if parts[-1] in _ROLE_FOLDERS and len(parts) > 1:
        return f"{parts[-2][:8]}/{parts[-1]}"
    return parts[-1]


def save_figure(fig: Figure, directory: str | os.PathLike[str], stem: str) -> list[Path]:
    """Save `fig` as `stem.png` and `stem.pdf` in `directory`, each through a temp file and an atomic rename."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        target = directory / f"{stem}.{suffix}"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=f".tmp.{suffix}")
        os.close(fd)
        try:
            fig.savefig(tmp, format=suffix, bbox_inches="tight")
            apply_umask(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        paths.append(target)
    return paths
