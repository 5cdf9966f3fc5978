"""The musician's picks among the Generate panel's candidates, as the taste store saves them: Accept is the
accepted candidate over every other one shown for the same prompt (and those discarded); Compare A/B the two
picked last; and the taste model's scores of the candidates shown. Functions of the panel (`panel` is a
GeneratePanel), as `layout.setup_ui` is; the store is `studio.host.taste`."""

from __future__ import annotations

from engine.music import Clip
from studio.generate.history import STREAMING, Candidate
from studio.host.taste import SOURCE_AB, SOURCE_ACCEPT, Judgement, prompt_clip


def judgement(panel, a: Candidate, b: Candidate, choice: str, source: str) -> Judgement | None:
    """A pair of candidates as the taste store saves it: their notes at their ticks, the sketch before them."""
    at = (a.span or b.span or (None,))[0]
    if at is None:
        return None
    clip = panel.doc.clip
    return Judgement(clip.with_notes(a.notes), clip.with_notes(b.notes), prompt_clip(clip, at), choice, source,
                     a_model={"role": "candidate", "label": a.label, **model_info(panel)},
                     b_model={"role": "candidate", "label": b.label, **model_info(panel)},
                     extra={"request": a.request, "mode": a.mode})


def model_info(panel) -> dict:
    path = (panel.host.model_version() or {}).get("path") if panel.host.connected else None
    return {"path": path} if path else {}


def record_accept(panel, item: Candidate) -> int:
    """Accept = this candidate over every other one shown for the same prompt (and those discarded)."""
    shown = [c for c in panel.model.items if c is not item and c.request == item.request and c.notes
             and c.status != STREAMING]
    others = shown + [c for c in panel._discarded.pop(item.request, []) if c not in shown]
    judgements = [j for j in (judgement(panel, item, c, "A", SOURCE_ACCEPT) for c in others) if j is not None]
    if judgements:
        panel.taste_store.record(judgements)
    return len(judgements)


def compare_pair(panel) -> tuple[Candidate, Candidate] | None:
    """(A, B) of Compare A/B: the earlier and the later of the last two candidates picked."""
    ab = [i for i in panel._ab if i in panel.model.items and i.notes and i.status != STREAMING]
    return (ab[0], ab[1]) if len(ab) >= 2 else None


def compare(panel, choice: str) -> bool:
    """Save the musician's A/B judgement ("A", "B" or "tie") of the two candidates picked."""
    pair = panel.compare_pair()
    if pair is None:
        panel.status.emit("Compare A/B: pick two candidates in the list first")
        return False
    pick = judgement(panel, pair[0], pair[1], choice, SOURCE_AB)
    if pick is None:
        return False
    panel.taste_store.record([pick])
    said = {"A": f"{pair[0].label} over {pair[1].label}", "B": f"{pair[1].label} over {pair[0].label}",
            "tie": f"{pair[0].label} and {pair[1].label} alike"}[choice]
    panel.status.emit(f"Saved your pick: {said}")
    return True


def score_taste(panel) -> None:
    """Taste scores of the candidates shown — only from a ready model."""
    store = panel.taste_store
    scores = {}
    if store.ready:
        for c in panel.model.items:
            if c.notes and c.status != STREAMING and c.span:
                scores[c.uid] = store.score(panel.doc.clip.with_notes(c.notes), prompt_clip(panel.doc.clip, c.span[0]))
    panel.model.set_taste(scores)
    panel.proxy.invalidate()


def taste_reward(store):
    """The search's taste reward: the store's model's score of a beam given the sketch before it (called on the
    search's worker thread; the model is only read)."""
    model = store.model

    def taste(music: Clip, prompt: Clip | None) -> float:
        return model.score(music, prompt)[0]

    return taste
