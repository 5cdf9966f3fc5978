"""The MIDI menu: live MIDI out, MIDI-in recording and thru."""
