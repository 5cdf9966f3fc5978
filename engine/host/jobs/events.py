"""Event tailing: a job's events.jsonl followed as an NDJSON stream (each step once, state changes, a
done line)."""

from __future__ import annotations

import asyncio
import json
import os

from engine.host.jobs.manager import JobManager
from engine.host.jobs.store import Job, as_count
from engine.host.wire import json_safe


async def tail_events(manager: JobManager, job: Job, poll_s: float = 0.25):
    """Yield the job's step lines (each step once, even across a resume that rewrites the file),
    state lines on changes, and the final done line once the job is no longer queued or running."""
    sent_step = -1
    offset = 0
    inode = None
    buffer = b""
    last_state = None
    while True:
        state = job.state  # read before the file: a final state seen here means the file is complete
        try:
            st = os.stat(job.events_path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_ino != inode or st.st_size < offset:  # rewritten (resume truncates): read again
                inode, offset, buffer = st.st_ino, 0, b""
            if st.st_size > offset:
                with open(job.events_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(st.st_size - offset)
                offset += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    try:
                        rec = json.loads(raw)
                    except (ValueError, RecursionError):  # torn, not UTF-8, nested too deeply
                        continue
                    step = as_count(rec.get("step")) if isinstance(rec, dict) else None
                    if step is None or step <= sent_step:
                        continue
                    sent_step = step
                    yield (json.dumps(json_safe(rec), allow_nan=False) + "\n").encode()
        if state != last_state:
            last_state = state
            yield (json.dumps({"event": "state", "state": state, "job": job.id}) + "\n").encode()
        if not state.active:
            info = manager.describe(job, details=True)
            yield (json.dumps({"done": True, "state": state, "job": job.id, "result": info.get("result"),
                               "error": info.get("error"), "final_model": info.get("final_model"),
                               "checkpoints": info.get("checkpoints")}, allow_nan=False) + "\n").encode()
            return
        await asyncio.sleep(poll_s)
