"""Files: projects, MIDI import/export, WAV export, recent files, autosave/recovery."""
