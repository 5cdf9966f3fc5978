"""Live play with a DAW: MIDI clock (`clock`), the beat-grid scheduler (`scheduler`), jam (`jam`), `smart live` (`cli`)."""
