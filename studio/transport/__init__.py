"""Transport: play/stop/loop/metronome/tempo, wrapping engine.playback.Player."""
