"""The policy host: an HTTP service (FastAPI + uvicorn) that generates, renders and scores for the studio,
and runs training jobs in their own processes.

- `server`: host state, request handling and the app factory (`create_app`)
- `scheduler`: batched decoding of all concurrent requests on one thread
- `middleware`: bearer-token auth, body limit, NDJSON event streams
- `jobs`: the training-job queue (each job a process running the `training` package's job command)
- `serve`: the `smart serve` command

The API's light contract (limits, names, defaults) is `engine.api`; the client is `engine.host_client`.
Nothing here imports `training` or `studio`, and nothing here imports Qt.
"""
