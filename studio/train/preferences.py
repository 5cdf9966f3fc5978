"""The Train panel's blind A/B choices go to the musician's preference store (`engine.preferences`).

Kept as the studio's name for it: the store itself (layout, record, tally, export, reset) is
`engine.preferences`, shared with taste learning (`smart taste fit`).
"""

from __future__ import annotations

from engine.preferences import FILE, TALLY, PreferenceSet, preference_dir, user_preference_dir

__all__ = ["FILE", "TALLY", "PreferenceSet", "preference_dir", "user_preference_dir"]
