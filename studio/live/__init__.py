"""Live play with a DAW in the studio: clock sync (`sync`, `synccontrol`), jam (`jam`), host generation (`hostgen`)."""
