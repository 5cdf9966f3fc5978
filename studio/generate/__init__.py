"""The Generate panel: continue / regenerate with the policy host, stream candidates as ghost notes,
audition, compare, accept (one undo step), live MAA scores, reward-guided search and history.

panel (what the musician does) · layout (its widgets) · options_view (the options shown and read back) ·
hostview / hostdialog (the host as the panel shows it) · picks (the musician's picks for the taste) ·
session (one request at a time to the host) · history (typed requests and candidates, no Qt) ·
placement (where a continuation goes, no Qt) · maa (the MAA notice) · sketchscore (the sketch's own scores) ·
candidates (table and colours) · audition · search · taste (the taste box) · jobs (worker threads) ·
options (settings, no Qt). The host connection, downloads and taste store: `studio.host`."""
