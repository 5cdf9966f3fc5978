"""Live training curves (pyqtgraph): reward (and each MAA axis when the run logs them), how far the model
moved from the original (KL, and the drift of its music's features with the drift guard's limit),
diversity of the outputs, completion length — or, for a DPO taste tune (`DPO_PLOTS`),
the preference loss, how many pairs the model ranks the musician's way, the reward margin and the
implicit rewards of the chosen and rejected continuations."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from engine.job_api import JobStep

AXIS_COLOURS = {"reward_mean": "#ffd040", "CE": "#5aa9ff", "CU": "#9fe0a0", "PC": "#e58fff", "PQ": "#ff8a65",
                "kl": "#ff6b6b", "drift": "#ffa94d", "drift_threshold": "#808080",
                "diversity": "#4dd0e1", "diversity_floor": "#808080",
                "completion_tokens": "#c5c9d4", "loss": "#ffd040", "rewards_accuracies": "#9fe0a0",
                "rewards_margins": "#5aa9ff", "rewards_chosen": "#9fe0a0", "rewards_rejected": "#ff6b6b"}
PLOTS = (
    ("reward", "Reward", ("reward_mean", "CE", "CU", "PC", "PQ")),
    ("kl", "Distance from the original model", ("kl", "drift", "drift_threshold")),
    ("diversity", "Diversity of the outputs", ("diversity", "diversity_floor")),
    ("length", "Completion length (tokens)", ("completion_tokens",)),
)
# A DPO taste tune logs no KL or diversity: its implicit rewards (β · log-ratio to the original model on
# the chosen and rejected continuations) show how far it moved instead.
DPO_PLOTS = (
    ("loss", "Preference loss (DPO)", ("loss",)),
    ("accuracy", "Pairs ranked your way", ("rewards_accuracies",)),
    ("margin", "Margin: chosen − rejected", ("rewards_margins",)),
    ("rewards", "Implicit reward vs the original", ("rewards_chosen", "rewards_rejected")),
)
LAYOUTS = {"grpo": PLOTS, "dpo": DPO_PLOTS}
DASHED = {"diversity_floor", "drift_threshold"}  # limits, drawn as dashed lines without markers
LABELS = {"reward_mean": "reward", "CE": "CE (enjoyment)", "CU": "CU (usefulness)", "PC": "PC (complexity)",
          "PQ": "PQ (quality)", "kl": "KL", "drift": "drift (music)", "drift_threshold": "drift limit",
          "diversity": "diversity", "diversity_floor": "floor",
          "completion_tokens": "tokens", "loss": "loss", "rewards_accuracies": "accuracy",
          "rewards_margins": "margin", "rewards_chosen": "chosen", "rewards_rejected": "rejected"}


class TrainingPlots(QWidget):
    """Four small plots fed with step records (`add(record)`); `clear()` for a new job;
    `set_layout("grpo" | "dpo")` shows a job's kind of curves (the records so far are drawn again)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        # What the reward plot shows (e.g. "Reward: notes (offline, no MAA)"), in full: a plot's own title
        # has half the panel's width and would be cut.
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setStyleSheet("color: #c8ccd4;")
        self.caption.hide()
        layout.addWidget(self.caption, 0, 0, 1, 2)
        self.titles: dict[int, str] = {}  # id(plot widget) -> its full title (shown elided to its width)
        self.widgets: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.data: dict[str, tuple[list[float], list[float]]] = {}
        self.legends: list[pg.LegendItem] = []
        self.frames: list[pg.PlotWidget] = []
        self.records: list[JobStep] = []
        self.layout_name = "grpo"
        for i in range(4):
            w = pg.PlotWidget(background="#1c1e22")
            w.showGrid(x=True, y=True, alpha=0.15)
            w.setMinimumHeight(110)
            w.getPlotItem().setLabel("bottom", "step")
            self.legends.append(w.addLegend(offset=(4, 4), labelTextSize="8pt"))
            self.frames.append(w)
            layout.addWidget(w, 1 + i // 2, i % 2)
        self._apply_layout()
        self.reward_note = ""

    @property
    def legend(self) -> pg.LegendItem:
        return self.legends[0]

    @property
    def plots(self) -> tuple:
        return LAYOUTS[self.layout_name]

    def _apply_layout(self) -> None:
        self.widgets = {}
        for w, (key, title, _series) in zip(self.frames, self.plots):
            self._set_title(w, title)
            self.widgets[key] = w

    def _set_title(self, w: pg.PlotWidget, title: str) -> None:
        """`title` over plot `w`, elided to the plot's width (never cut mid-letter); the full text in its tooltip."""
        self.titles[id(w)] = title
        font = QFont(self.font())
        font.setPointSizeF(9)
        room = max(40, w.width() - 24)
        shown = QFontMetrics(font).elidedText(title, pg.QtCore.Qt.ElideRight, room)
        w.setTitle(shown, color="#c8ccd4", size="9pt")
        w.setToolTip(title if shown != title else "")

    def title_of(self, key: str) -> str:
        """The title shown over plot `key` (elided to its width)."""
        return self.widgets[key].getPlotItem().titleLabel.text

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        for w in self.frames:
            if id(w) in self.titles:
                self._set_title(w, self.titles[id(w)])

    def set_layout(self, name: str) -> None:
        """Show the curves of a "grpo" job (GRPO and taste GRPO) or a "dpo" taste tune."""
        if name not in LAYOUTS or name == self.layout_name:
            return
        records = list(self.records)
        self.clear()
        self.layout_name = name
        self._apply_layout()
        for rec in records:
            self.add(rec)

    def set_reward_title(self, text: str) -> None:
        """e.g. "Reward — notes (offline, no MAA)" or "… (random-weight MAA: not real scores)": said in full
        in the caption over the plots; the reward plot itself is titled "Reward"."""
        self.caption.setText(text.replace(" — ", ": ", 1))
        self.caption.setVisible(bool(text))

    def clear(self) -> None:
        for w in self.frames:
            w.clear()
            # A new job's curves get axes of their own, not the ranges the previous job's curves left.
            w.getPlotItem().enableAutoRange()
        for legend in self.legends:
            legend.clear()
        self.curves.clear()
        self.data.clear()
        self.records.clear()

    def _curve(self, plot: str, series: str) -> pg.PlotDataItem:
        curve = self.curves.get(series)
        if curve is None:
            pen = pg.mkPen(AXIS_COLOURS.get(series, "#ffffff"), width=2 if series == "reward_mean" else 1.4,
                           style=pg.QtCore.Qt.DashLine if series in DASHED else pg.QtCore.Qt.SolidLine)
            named = len(next(s for k, _t, s in self.plots if k == plot)) > 1  # a legend only where it tells apart
            curve = self.widgets[plot].plot([], [], pen=pen, name=LABELS.get(series, series) if named else None,
                                            symbol="o" if series not in DASHED else None, symbolSize=4,
                                            symbolBrush=AXIS_COLOURS.get(series, "#ffffff"), symbolPen=None)
            self.curves[series] = curve
        return curve

    def add(self, record: JobStep) -> None:
        step = record.step
        self.records.append(record)
        for plot, _title, series_list in self.plots:
            for series in series_list:
                value = record.metric(series)
                if value is None:
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
