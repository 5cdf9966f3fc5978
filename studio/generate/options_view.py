"""The Generate panel's options shown and read back: the `GenerateOptions` in its widgets, the search
rewards this host and taste can compute, and the one-line summary of the folded Settings header. Functions of
the panel (`panel` is a GeneratePanel), as `layout.setup_ui` is."""

from __future__ import annotations

from engine.api import MaaStatus
from studio.generate.maa import usable
from studio.generate.placement import MODES
from studio.generate.search import MAA_REWARDS, TASTE_MIX, TASTE_REWARD, OFFLINE_REWARDS, reward_label


def option_widgets(panel) -> tuple:
    return (panel.spin_candidates, panel.spin_bars, panel.spin_temperature, panel.spin_top_p, panel.spin_seed,
            panel.spin_low, panel.spin_high, panel.chk_key, panel.chk_score, panel.combo_root, panel.combo_scale,
            panel.spin_beams, panel.spin_expand, panel.spin_budget, panel.combo_reward, panel.combo_placement)


def apply_options_to_ui(panel) -> None:
    o = panel.options
    for w in option_widgets(panel):
        w.blockSignals(True)
    panel.spin_candidates.setValue(o.candidates)
    panel.spin_bars.setValue(o.bars)
    panel.spin_temperature.setValue(o.temperature)
    panel.spin_top_p.setValue(o.top_p)
    panel.spin_seed.setValue(o.seed)
    panel.spin_low.setValue(o.low)
    panel.spin_high.setValue(o.high)
    panel.chk_key.setChecked(o.key_lock)
    panel.chk_score.setChecked(o.score)
    panel.combo_root.setCurrentIndex(o.key_root)
    panel.combo_scale.setCurrentText(o.key_scale)
    panel.combo_placement.setCurrentIndex(max(0, panel.combo_placement.findData(o.placement)))
    panel.spin_beams.setValue(o.search_beams)
    panel.spin_expand.setValue(o.search_expansions)
    panel.spin_budget.setValue(o.search_budget_s)
    panel._fill_rewards()
    for w in option_widgets(panel):
        w.blockSignals(False)
    panel.combo_root.setEnabled(o.key_lock)
    panel.combo_scale.setEnabled(o.key_lock)
    panel.settings_section.set_summary(panel.settings_summary())


def fill_rewards(panel) -> None:
    """MAA rewards only when the host can score; taste ones once the taste model is ready; the offline
    ones always."""
    status = panel.host.maa_status()
    want = panel.options.search_reward
    panel.combo_reward.blockSignals(True)
    panel.combo_reward.clear()
    taste = ([TASTE_REWARD] + ([*TASTE_MIX] if usable(status) else [])) if panel.taste_store.ready else []
    for name in ([*MAA_REWARDS] if usable(status) else []) + taste + list(OFFLINE_REWARDS):
        label = reward_label(name)
        if name in MAA_REWARDS and status == MaaStatus.RANDOM_WEIGHTS:
            label += " (random weights — test only)"
        panel.combo_reward.addItem(label, name)
    i = panel.combo_reward.findData(want)
    panel.combo_reward.setCurrentIndex(i if i >= 0 else 0)
    panel.combo_reward.blockSignals(False)


def options_from_ui(panel, *_args) -> None:
    o = panel.options
    o.candidates = panel.spin_candidates.value()
    o.bars = panel.spin_bars.value()
    o.temperature = round(panel.spin_temperature.value(), 3)
    o.top_p = round(panel.spin_top_p.value(), 3)
    o.seed = panel.spin_seed.value()
    o.low, o.high = panel.spin_low.value(), panel.spin_high.value()
    o.key_lock = panel.chk_key.isChecked()
    if panel.chk_score.isEnabled():  # greyed out (no MAA): the musician's choice stays as it was
        o.score = panel.chk_score.isChecked()
    o.key_root = panel.combo_root.currentIndex()
    o.key_scale = panel.combo_scale.currentText()
    o.placement = panel.combo_placement.currentData() or o.placement
    o.search_beams = panel.spin_beams.value()
    o.search_expansions = panel.spin_expand.value()
    o.search_budget_s = float(panel.spin_budget.value())
    if panel.combo_reward.currentData():
        o.search_reward = panel.combo_reward.currentData()
    panel.combo_root.setEnabled(o.key_lock)
    panel.combo_scale.setEnabled(o.key_lock)
    panel.settings_section.set_summary(panel.settings_summary())
    o.save(panel.settings)


def settings_summary(panel) -> str:
    """The settings in one line, for the folded Settings header."""
    o = panel.options
    placement = (MODES.get(o.placement) or "").split(" —")[0]
    return (f"{o.candidates} × {o.bars} bar{'s' if o.bars != 1 else ''} · T {o.temperature:.2f} · "
            f"top-p {o.top_p:.2f} · {placement}")
