"""The studio process never loads the model stack: it reaches the model through a host only.

Runs in a fresh interpreter, so modules other tests imported cannot hide (or fake) a load.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "trl", "audiobox_aesthetics")

CHILD = r"""
import json, pathlib, sys
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from engine.music import Clip, Note
from studio.mainwindow import MainWindow
tmp = pathlib.Path(sys.argv[1])
(tmp / "song.mid").write_bytes(Clip([Note(i * 480, 60 + i % 7, 400, 80) for i in range(32)], ppq=480).to_midi_bytes())
window = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.IniFormat), recovery_dir=tmp / "recovery",
                    audio=False, interactive=False)
window.show()
app.processEvents()
opened_midi = window.open_path(tmp / "song.mid", ask=False)
window.document.select_all()
window.generate_panel.raise_()
window.train_panel.raise_()
app.processEvents()
saved = window.save_to(tmp / "song.smartproj")
opened_project = window.open_path(tmp / "song.smartproj", ask=False)
app.processEvents()
heavy = sorted(m for m in HEAVY if m in sys.modules)
window.shutdown()
print(json.dumps({"midi": opened_midi, "saved": saved, "project": opened_project, "heavy": heavy,
                  "notes": len(window.document.notes)}))
""".replace("HEAVY", repr(HEAVY))


def test_window_with_midi_and_project_loads_no_model_stack(tmp_path):
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["midi"] and result["saved"] and result["project"] and result["notes"] == 32
    assert result["heavy"] == [], f"the studio loaded {result['heavy']}"
