"""The Generate panel: continue / regenerate with the policy host, stream candidates as ghost notes,
audition, compare, accept (one undo step), live MAA scores, reward-guided search and history.

panel (what the musician does) · layout (its widgets) · session (one request at a time to the host) ·
history (typed requests and candidates, no Qt) · placement (where a continuation goes, no Qt) ·
maa (the MAA notice and download) · sketchscore (the sketch's own scores) · hostconn / hostdialog (the host) ·
candidates (table and colours) · audition · search · jobs (worker threads) · options (settings, no Qt)."""
