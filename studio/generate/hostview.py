"""The host as the Generate panel shows it: the host line and its progress while the local host starts,
the Host… dialog, the MAA notice and score switches following the host's MAA status, and the local host
restarted with new MAA weights (or without a file it could not start with). Functions of the panel (`panel`
is a GeneratePanel), as `layout.setup_ui` is; the connection itself is `studio.host.connection`."""

from __future__ import annotations

from engine.api import MaaStatus
from studio.generate.maa import usable
from studio.host.connection import LOCAL, REMOTE
from studio.theme import STYLE_DIM, STYLE_OK, STYLE_WARN


def host_dialog(panel) -> None:
    from studio.generate.hostdialog import HostDialog

    dlg = HostDialog(panel.host.mode, panel.host.model_dir or "", panel.host.url, panel.host.token, panel,
                     maa_path=panel.host.maa_path or "")
    if dlg.exec():
        mode, model_dir, url, token = dlg.values()
        panel.set_host(mode, model_dir=model_dir or None, url=url, token=token, maa_path=dlg.maa_file())


def set_host(panel, mode: str, *, model_dir: str | None = None, url: str = "", token: str = "",
             maa_path: str | None = None, connect: bool = True) -> None:
    panel.stop()
    maa_path = maa_path if maa_path is not None else panel.host.maa_path
    panel.host.configure(mode, model_dir=model_dir, maa_path=maa_path, url=url, token=token)
    panel.host.save_settings(panel.settings)
    if connect:
        panel.host.connect_host()


def on_host_changed(panel) -> None:
    h = panel.host
    if h.state == "failed" and h.mode == LOCAL and h.maa_path and not panel._without_maa_retried:
        start_without_maa(panel, h.maa_path, h.error or "")
        return
    panel.host_label.setText(h.describe())
    panel.host_label.setStyleSheet(STYLE_OK if h.connected else (STYLE_WARN if h.state == "failed" else STYLE_DIM))
    panel.host_label.setToolTip(h.error or (f"{h.url or 'local'} — device {h.device()}" if h.connected else ""))
    panel.host_progress.setVisible(h.busy)
    if h.busy:
        panel._host_timer.start()
        panel._show_host_progress()
    else:
        panel._host_timer.stop()
    panel.btn_connect.setText("Reconnect" if h.connected else "Connect")
    panel.btn_connect.setEnabled(not h.busy)
    panel._sync_maa()
    panel._fill_rewards()
    panel._sync_buttons()
    if h.connected:
        panel.scorer.schedule(immediately=True)


def show_host_progress(panel) -> None:
    detail = panel.host.startup_detail()
    if detail:
        panel.host_label.setText(f"{panel.host.describe()} {detail}. You can keep editing meanwhile.")


def sync_maa(panel) -> None:
    status = panel.host.maa_status()
    panel.maa.show_status(status, panel.host.maa_reason(), remote=panel.host.mode == REMOTE)
    panel.session.random_weights = status == MaaStatus.RANDOM_WEIGHTS
    panel.model.set_show_scores(usable(status))
    can_score = usable(status) or status == "unknown"
    panel.chk_score.setEnabled(can_score)
    panel.chk_score.blockSignals(True)
    panel.chk_score.setChecked(panel.options.score and can_score)
    panel.chk_score.blockSignals(False)
    panel.chk_score.setToolTip("Render and score each candidate (CE/CU/PC/PQ) as soon as it is complete"
                              if can_score else "Needs the MAA scoring model (see the note above)")
    panel.random_warning.setVisible(status == MaaStatus.RANDOM_WEIGHTS and any(i.scores for i in panel.model.items))
    if not usable(status):
        panel.scorer.clear()


def start_without_maa(panel, path: str, error: str) -> None:
    """The local host did not start with its MAA file: start it without (this session; the Host dialog
    shows the file, to clear or replace it) rather than leave the studio without a model."""
    panel._without_maa_retried = True
    note = (f"The local host did not start with the MAA file {path} ({error.splitlines()[0][:200] if error else 'failed'}): "
            "started without MAA scores. Host… shows the file, to clear or replace it.")
    panel.host.maa_path = None
    panel.host.connect_host()
    panel.maa.say(note, warn=True)
    panel.status.emit(note)


def use_weights(panel, path: str) -> None:
    """New MAA weights: the local host restarts with them; a remote host needs its own."""
    panel.host.maa_path = path
    panel.host.save_settings(panel.settings)
    if panel.host.mode == REMOTE:
        panel.maa.say(f"Saved {path}. The remote host scores with its own weights: start "
                     f"`smart serve --maa PATH` there.", warn=True)
        return
    panel.maa.say("Restarting the local host with the MAA weights…")
    panel.stop()
    panel.host.connect_host()
