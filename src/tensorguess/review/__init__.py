"""`tensorguess review TF_FILES [--sorted DEST ...]`: a page that turns doubtful photos into
better training data.

It lists, most useful first, the photos worth a look: training photos whose label looks
wrong (with the likely one: `tensorguess doctor`'s findings), near-duplicates side by side,
outliers, and from each sorted DEST the copies guessDir.sh named `unsure-` or `unknown-`
(lowest score first); and it acts on them, by click, by key or through its JSON API under
`/api/` (documented in OpenAPI at `/docs` and in docs/review.md).

Users hand it their training photos, so:

- Nothing is deleted or overwritten. Relabelling a training photo moves it to
  `data/<label>/`, removing one moves it to `TF_FILES/removed/<label>/`; both take the
  first free name from the photo's own (`IMG_1.jpg`, `IMG_1-1.jpg`, ...: guessDir's free
  names, a hard link made and then the old name dropped, so a name is never replaced).
  Relabelling a sorted copy leaves it in DEST and copies it into `data/<label>/` (written
  whole under a temporary name, checked against its SHA-256, then named); the copy's line
  in DEST's manifest records the person's label in a last column, `reviewed_label` (the
  manifest rewritten whole and renamed onto the old one), and guessDir.sh reads DEST as
  before (classify/sort.py).
- Every action is written to the journal, `TF_FILES/review.jsonl` (one JSON object a
  line), and fsynced, before it is applied; once applied, a second line says so and where
  the photo went. Applying is idempotent: on start, an action journaled but not marked done
  (the server was killed in between, or halfway through a move: the photo under both names)
  is completed, so that every photo exists exactly once, and a last line cut by a power cut
  is dropped. A move or copy that cannot be completed (the photo changed or vanished
  meanwhile) is marked failed, with nothing changed.
- An action names the photo and the SHA-256 the page was shown: a photo changed on disk
  since it was listed, or acted on already (from another page, say), is refused with 409;
  an unknown photo is 404 and a label that is no folder name (a path separator, a leading
  dot, a control character) 400, each with one line. Actions run one at a time.
- Keep marks a finding as checked: it is not listed again until one of its photos' content
  changes (the journal holds their SHA-256). Undo reverses the last action not undone (or
  the one named), through the journal like any other: a moved photo goes back to its
  folder (a free name from its own), a copy made from DEST is dropped once DEST's copy is
  checked to hold the same bytes.
- An action on a sorted copy holds DEST's lock (a guessDir.sh sorting into it meanwhile
  is refused and the action with it: 409), as every action holds TF_FILES' train lock.
- Retraining from the page runs train.sh's training (`tensorguess train TF_FILES --preset
  P`, the preset tensorguess.json records) in a process of its own, which holds TF_FILES'
  train lock as train.sh does: a train.sh started meanwhile is refused, and the page's
  training is refused while a train.sh runs. Training photos are not moved while any
  training runs. The page shows its progress, then the new test accuracy beside the old,
  and lists again.
- One review at a time per TF_FILES (the journal is locked). It listens on 127.0.0.1 only,
  unless `--host` says otherwise; beyond loopback it refuses to start without an API key,
  since it moves the user's files. Requests under `/api/` then need `Authorization:
  Bearer <key>`; they must send JSON (a form on another site cannot), and on loopback a
  Host header naming another machine is refused (DNS rebinding).

Modules: `journal` (the file and its lock), `moves` (moving and copying without
overwriting, completed after a kill), `actions` (what each action does, undo, replay),
`listing` (the findings as items), `sorted_copies` (DEST's manifests and the labels they record),
`pictures` (thumbnails and heat maps, in the background), `retrain` (the training
process), `guard`, `app` and `server` (HTTP), and `page` (the page's HTML and script).
"""
