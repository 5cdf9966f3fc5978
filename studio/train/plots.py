"""Live training curves (pyqtgraph): reward (and each MAA axis when the run logs them), KL to the
original model, diversity of the outputs, completion length."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QWidget

AXIS_COLOURS = {"reward_mean": "#ffd040", "CE": "#5aa9ff", "CU": "#9fe0a0", "PC": "#e58fff", "PQ": "#ff8a65",
                "kl": "#ff6b6b", "diversity": "#4dd0e1", "diversity_floor": "#808080",
                "completion_tokens": "#c5c9d4"}
PLOTS = (
    ("reward", "Reward", ("reward_mean", "CE", "CU", "PC", "PQ")),
    ("kl", "KL to the original model", ("kl",)),
    ("diversity", "Diversity of the outputs", ("diversity", "diversity_floor")),
    ("length", "Completion length (tokens)", ("completion_tokens",)),
)
LABELS = {"reward_mean": "reward", "CE": "CE (enjoyment)", "CU": "CU (usefulness)", "PC": "PC (complexity)",
          "PQ": "PQ (quality)", "kl": "KL", "diversity": "diversity", "diversity_floor": "floor",
          "completion_tokens": "tokens"}


class TrainingPlots(QWidget):
    """Four small plots fed with step records (`add(record)`); `clear()` for a new job."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.widgets: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.data: dict[str, tuple[list[float], list[float]]] = {}
        self.legend: pg.LegendItem | None = None
        for i, (key, title, _series) in enumerate(PLOTS):
            w = pg.PlotWidget(background="#1c1e22")
            w.setTitle(title, color="#c8ccd4", size="9pt")
            w.showGrid(x=True, y=True, alpha=0.15)
            w.setMinimumHeight(110)
            w.getPlotItem().setLabel("bottom", "step")
            if key == "reward":
                self.legend = w.addLegend(offset=(4, 4), labelTextSize="8pt")
            self.widgets[key] = w
            layout.addWidget(w, i // 2, i % 2)
        self.reward_note = ""

    def set_reward_title(self, text: str) -> None:
        """e.g. "Reward — notes (offline, no MAA)" or "… (random-weight MAA: not real scores)"."""
        self.widgets["reward"].setTitle(text, color="#c8ccd4", size="9pt")

    def clear(self) -> None:
        for w in self.widgets.values():
            w.clear()
        if self.legend is not None:
            self.legend.clear()
        self.curves.clear()
        self.data.clear()

    def _curve(self, plot: str, series: str) -> pg.PlotDataItem:
        curve = self.curves.get(series)
        if curve is None:
            pen = pg.mkPen(AXIS_COLOURS.get(series, "#ffffff"), width=2 if series == "reward_mean" else 1.4,
                           style=pg.QtCore.Qt.DashLine if series == "diversity_floor" else pg.QtCore.Qt.SolidLine)
            curve = self.widgets[plot].plot([], [], pen=pen, name=LABELS.get(series, series),
                                            symbol="o" if series != "diversity_floor" else None, symbolSize=4,
                                            symbolBrush=AXIS_COLOURS.get(series, "#ffffff"), symbolPen=None)
            self.curves[series] = curve
        return curve

    def add(self, record: dict) -> None:
        step = record.get("step")
        if not isinstance(step, (int, float)):
            return
        for plot, _title, series_list in PLOTS:
            for series in series_list:
                value = record.get(series)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                xs, ys = self.data.setdefault(series, ([], []))
                if xs and step <= xs[-1]:  # a resumed run re-sends nothing, but be safe: keep steps ordered
                    while xs and xs[-1] >= step:
                        xs.pop()
                        ys.pop()
                xs.append(float(step))
                ys.append(float(value))
                self._curve(plot, series).setData(xs, ys)

    def points(self, series: str) -> int:
        return len(self.data.get(series, ([], []))[0])
