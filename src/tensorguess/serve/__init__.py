"""`tensorguess serve`: the classifier train.sh wrote, over HTTP.

What it promises:
- TensorFlow Serving's REST API, so its clients work unchanged: `GET /v1/models/NAME`
  (status), `GET /v1/models/NAME/metadata`, `POST /v1/models/NAME:predict` with
  `{"instances": [{"b64": ...}]}` answering `{"predictions": [{"scores", "classes"}]}` (or
  `{"inputs": ...}` answering `{"outputs": ...}`), `POST /v1/models/NAME:classify`, each
  also under `/versions/V`. Then `POST /v1/guess` (multipart files, the JSON of
  `guess --json`), the page at `/`, `/healthz`, and the OpenAPI page at `/docs`, served
  from the package (it works offline).
- The answers are guess.sh's: the same decoder (images.py), model and engine.
- Concurrent requests share network calls (batching.py); the work in the server is
  bounded, and past the bound a request gets 503 at once. So are the bytes of the bodies
  it holds, all requests together, and the time a client may take to send its request:
  neither large uploads nor slow ones can take its memory or keep others out (guard.py,
  protocol.py).
- A model train.sh writes into TF_FILES is picked up without a restart; requests in
  flight finish on the old one (model.py).
- A bad request gets a 4xx and `{"error": "<one line>"}`; none ends the server or
  becomes a 500, and a 500 tells the client nothing of its cause (the log has it).
  Nothing from a request is written to disk.
- Only 127.0.0.1 unless `--host` says otherwise; with an API key, every route but
  `/healthz` and the page's HTML needs `Authorization: Bearer <key>`.

Modules: `payloads` (images out of requests), `schemas` (the API's models), `guard` (the
API key and the limits on requests and their bodies), `protocol` (the limits on a
request's head), `model` (loading and switching models), `batching`, `app` (the routes and
refusals), `server` (the socket and uvicorn); the page is `page.html`. The load tests are
in `tensorguess.bench`: `loadtest` (speed) and `abuse` (the limits, from outside).
"""
