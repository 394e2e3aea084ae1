"""The review's page: one HTML file with its style and script, no other request but the API's.

Kept in a module rather than a data file so that every install has it without packaging
rules. The server writes its facts (TF_FILES, the DESTs, whether it needs a key) into
`/*CONFIG*/{}`.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tensorguess review</title>
<link rel="icon" href="data:,">
<style>
  :root { --ink: #1d2330; --muted: #5d6678; --line: #d8dce4; --accent: #2f6fde;
          --warn: #b86e00; --bad: #b3261e; --good: #1e7b3a; --paper: #f6f7f9;
          font-family: system-ui, sans-serif; color: var(--ink); }
  body { margin: 0; background: var(--paper); }
  header { position: sticky; top: 0; z-index: 2; background: #fff; padding: 0.7rem 1.5rem;
           border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap;
           gap: 0.6rem 1.4rem; align-items: center; }
  h1 { margin: 0; font-size: 1.25rem; }
  .facts { color: var(--muted); font-size: 0.9rem; }
  button { font: inherit; padding: 0.3rem 0.7rem; border: 1px solid var(--line);
           border-radius: 7px; background: #fff; cursor: pointer; }
  button:hover { border-color: var(--accent); }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  button:disabled { opacity: 0.5; cursor: default; }
  #training { font-size: 0.9rem; color: var(--muted); max-width: 40rem; overflow: hidden;
              text-overflow: ellipsis; white-space: nowrap; }
  #accuracy b { color: var(--ink); }
  main { padding: 0.8rem 1.5rem 3rem; }
  #status { min-height: 1.3em; color: var(--muted); margin: 0.3rem 0 0.6rem; }
  #status.bad { color: var(--bad); }
  #keyform { margin: 0.6rem 0; padding: 0.7rem 1rem; background: #fff8e6; border-radius: 8px; }
  #keyform input { font: inherit; padding: 0.3rem; width: 18rem; }
  #help { color: var(--muted); font-size: 0.85rem; margin: 0 0 0.8rem; }
  kbd { border: 1px solid var(--line); border-bottom-width: 2px; border-radius: 4px;
        padding: 0 0.3rem; background: #fff; font-size: 0.8rem; }
  h2 { font-size: 1.1rem; margin: 1.4rem 0 0.5rem; }
  h2 small { color: var(--muted); font-weight: normal; }
  .items { display: grid; grid-template-columns: repeat(auto-fill, minmax(25rem, 1fr));
           gap: 0.9rem; }
  .item { background: #fff; border: 1px solid var(--line); border-radius: 12px;
          padding: 0.7rem; }
  .item .why { margin: 0 0 0.5rem; font-size: 0.9rem; }
  .item .why b { color: var(--warn); }
  .photos { display: flex; gap: 0.6rem; }
  .photo { flex: 1; min-width: 0; border: 2px solid transparent; border-radius: 10px;
           padding: 0.35rem; }
  .photo.selected { border-color: var(--accent); background: #eef4ff; }
  .photo .pictures { display: flex; gap: 0.3rem; }
  .photo img { width: 9rem; height: 9rem; object-fit: cover; border-radius: 8px;
               background: var(--paper); flex: none; }
  .photo .name { font-size: 0.8rem; color: var(--muted); margin: 0.25rem 0;
                 white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .photo .label { font-weight: 600; }
  .buttons { display: flex; flex-wrap: wrap; gap: 0.25rem; margin-top: 0.35rem; }
  .buttons button { font-size: 0.8rem; padding: 0.15rem 0.45rem; }
  .buttons button.suggested { border-color: var(--warn); }
  .buttons input { font: inherit; font-size: 0.8rem; width: 7rem; padding: 0.15rem 0.3rem; }
  .photo .done { color: var(--good); font-size: 0.85rem; margin-top: 0.3rem; }
  .photo.acted .buttons { display: none; }
  .photo.acted img { opacity: 0.45; }
  .item.kept { opacity: 0.6; }
  .heatnote { font-size: 0.75rem; color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>tensorguess review</h1>
  <span class="facts" id="where"></span>
  <span id="accuracy" class="facts"></span>
  <button id="train" class="primary" type="button">Train again</button>
  <span id="training" role="status"></span>
  <button id="undo" type="button" title="u">Undo last</button>
  <button id="refresh" type="button">Check again</button>
</header>
<main>
  <form id="keyform" hidden>
    <label>This review needs its API key:
      <input id="key" type="password" autocomplete="off"></label>
    <button type="submit">Use the key</button>
  </form>
  <p id="help">Choose a photo (click, or <kbd>&larr;</kbd> <kbd>&rarr;</kbd>), then: a digit
    gives it that label, <kbd>r</kbd> removes it from training (into removed/), <kbd>k</kbd>
    keeps it (not listed again until it changes), <kbd>n</kbd> a new label, <kbd>h</kbd> its
    heat map, <kbd>u</kbd> undoes the last action. Nothing is deleted: every action is in
    review.jsonl.</p>
  <p id="status" role="status"></p>
  <div id="lists"></div>
</main>
<script>
"use strict";
// Written in by the server: TF_FILES, the sorted DESTs, whether it needs a key.
const CONFIG = /*CONFIG*/{};
const SECTIONS = [
  ["label_issue", "Likely mislabelled", "the label the photo more likely has, and how likely"],
  ["near_duplicate", "Near-duplicates", "nearly the same photo twice: surplus, or a wrong label"],
  ["outlier", "Outliers", "far from every label"],
  ["sorted", "Doubtful sorted copies", "guessDir.sh's unsure- and unknown- copies, lowest first"],
];
const VERBS = {relabel: "relabelled", remove: "removed", keep: "kept"};
let key = sessionStorage.getItem("tensorguess-review-key") || "";
let state = null, selected = null, polling = null;
const pictures = new Map();  // photo id + content -> object URL
const $ = (id) => document.getElementById(id);

// An element with properties and children: el("b", {id: "x"}, "text").
function el(tag, properties = {}, ...children) {
  const made = Object.assign(document.createElement(tag), properties);
  made.append(...children);
  return made;
}

function say(text, bad = false) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "";
}

async function api(path, body) {
  const options = {headers: {}};
  if (key) options.headers.Authorization = "Bearer " + key;
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(path, options);
  if (answer.status === 401) {
    $("keyform").hidden = false;
    throw new Error("this review needs its API key");
  }
  return answer;
}

async function json(path, body) {
  const answer = await api(path, body);
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function percent(value) {
  return value == null ? "none yet" : (100 * value).toFixed(1) + "%";
}

async function load() {
  try {
    state = await json("/api/items");
  } catch (error) {
    say(error.message, true);
    return;
  }
  render();
  const busy = state.checking || state.training.status === "running";
  if (busy && !polling) polling = setInterval(load, 1000);
  if (!busy && polling) {
    clearInterval(polling);
    polling = null;
  }
}

function renderTraining() {
  const training = state.training;
  $("train").disabled = training.status === "running";
  const texts = {
    idle: "",
    running: `training (${training.preset}, ${training.seconds} s): ${training.progress}`,
    done: `trained in ${training.seconds} s`,
    failed: "training failed: " + training.progress,
  };
  $("training").textContent = texts[training.status];
  $("training").title = training.lines.join("\n");
  $("accuracy").textContent = "";
  if (training.status === "done") {
    $("accuracy").append(
      "test accuracy ", el("b", {id: "new-accuracy"}, percent(training.new_test_accuracy)),
      " (before: ", el("span", {id: "old-accuracy"}, percent(training.old_test_accuracy)), ")");
  }
}

function render() {
  const sorted = CONFIG.sorted.length ? " + " + CONFIG.sorted.join(", ") : "";
  $("where").textContent = CONFIG.tf_files + sorted;
  renderTraining();
  if (state.problem) say("The check failed: " + state.problem, true);
  else if (state.checking) {
    say(state.checked_at ? "Checking the photos again..." : "Checking the photos...");
  } else if ($("status").className !== "bad" || !$("status").textContent) say(summary());
  const lists = $("lists");
  lists.textContent = "";
  for (const [kind, title, note] of SECTIONS) {
    const items = state.items.filter((item) => item.kind === kind);
    if (!items.length && kind === "sorted" && !CONFIG.sorted.length) continue;
    const heading = el("h2", {}, `${title} (${items.length}) `, el("small", {}, note));
    lists.append(heading, el("div", {className: "items", id: "list-" + kind}, ...items.map(card)));
  }
  const tiles = allTiles();
  if (selected && !tiles.some((tile) => tile.dataset.key === selected)) selected = null;
  if (!selected) {
    const first = tiles.find((tile) => !tile.classList.contains("acted"));
    selected = first ? first.dataset.key : null;
  }
  highlight(false);
}

function summary() {
  if (!state.checked_at) return "";
  const open = state.items.filter((item) => !item.actions.length).length;
  return `${state.items.length} findings, ${open} not acted on yet.`;
}

function why(item) {
  if (item.kind === "label_issue") {
    return el("p", {className: "why"}, "likely ", el("b", {}, item.suggested),
      ` (${item.confidence.toFixed(2)}; its label wrong: ${item.wrong.toFixed(2)})`);
  }
  let text;
  if (item.kind === "near_duplicate") {
    text = (item.identical ? "identical" : "similarity " + item.similarity.toFixed(3)) +
      (item.across_labels ? ", under two labels" : "") +
      (item.straddles_train_and_test ? ", across train and test" : "");
  } else if (item.kind === "outlier") {
    text = "novelty " + item.novelty.toFixed(3);
  } else {
    text = `${item.unknown ? "unknown" : "unsure"}, score ${item.score.toFixed(5)} in ${item.dest}`;
  }
  return el("p", {className: "why"}, text);
}

function card(item) {
  const kept = item.actions.find((action) => action.action === "keep");
  const photos = el("div", {className: "photos"}, ...item.photos.map((p) => tile(item, p, kept)));
  const box = el("div", {className: "item" + (kept ? " kept" : "")}, why(item), photos);
  box.dataset.item = item.id;
  return box;
}

function tile(item, photo, kept) {
  const image = el("img", {alt: photo.name});
  const box = el("div", {className: "photo"}, el("div", {className: "pictures"}, image),
    el("div", {className: "label"}, photo.label),
    el("p", {className: "name", title: photo.id}, photo.id));
  Object.assign(box.dataset, {key: item.id + "#" + photo.id, photo: photo.id, item: item.id,
    sha: photo.sha256, where: photo.where});
  const thumbnail = "/api/photos/thumbnail?photo=" + encodeURIComponent(photo.id);
  picture(image, thumbnail, photo.id + photo.sha256);
  const acted = item.actions.find((action) => action.photo === photo.id &&
    action.action !== "keep") || kept;
  if (acted) {
    box.classList.add("acted");
    const undo = el("button", {type: "button", className: "undo-one"}, "undo");
    undo.addEventListener("click", (event) => {
      event.stopPropagation();
      undoAction(acted.id);
    });
    const as = acted.to_label ? " as " + acted.to_label : "";
    box.append(el("div", {className: "done"},
      `${VERBS[acted.action]}${as} (action ${acted.id}) `, undo));
  } else {
    box.append(buttons(item, photo));
  }
  box.addEventListener("click", () => {
    selected = box.dataset.key;
    highlight(false);
  });
  return box;
}

function buttons(item, photo) {
  const row = el("div", {className: "buttons"});
  state.labels.forEach((label, index) => {
    if (label === photo.label && photo.where === "data") return;
    const digit = index < 10 ? (index + 1) % 10 + " " : "";
    const button = el("button", {type: "button", className: "relabel"}, digit + label);
    button.dataset.label = label;
    if (label === item.suggested) button.classList.add("suggested");
    button.addEventListener("click", () => act("relabel", item, photo, label));
    row.append(button);
  });
  const field = el("input", {className: "newlabel", placeholder: "new label"});
  field.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter" && field.value.trim()) {
      act("relabel", item, photo, field.value.trim());
    }
  });
  row.append(field);
  if (photo.where === "data") {
    const remove = el("button", {type: "button", className: "remove"}, "r remove");
    remove.addEventListener("click", () => act("remove", item, photo));
    row.append(remove);
  }
  const keep = el("button", {type: "button", className: "keep"}, "k keep");
  keep.addEventListener("click", () => act("keep", item, photo));
  const heat = el("button", {type: "button", className: "heat"}, "h heat map");
  heat.addEventListener("click", (event) => showHeat(event.target.closest(".photo"), photo));
  row.append(keep, heat);
  return row;
}

// Fetched (with the key, when there is one) and shown as an object URL: true when shown,
// false while the server is still making it (202), null when there is none.
async function picture(image, path, cacheKey) {
  if (pictures.has(cacheKey)) {
    image.src = pictures.get(cacheKey);
    return true;
  }
  try {
    const answer = await api(path);
    if (answer.status === 202) return false;
    if (!answer.ok) {
      image.alt = image.title = (await answer.json()).error;
      return null;
    }
    const url = URL.createObjectURL(await answer.blob());
    pictures.set(cacheKey, url);
    image.src = url;
    return true;
  } catch (error) {
    return null;
  }
}

async function showHeat(box, photo) {
  if (!box || box.querySelector(".heat-image")) return;
  const image = el("img", {className: "heat-image", alt: "heat map of " + photo.name});
  const note = el("span", {className: "heatnote"}, "making the heat map...");
  box.querySelector(".pictures").append(image, note);
  const path = "/api/photos/heat?photo=" + encodeURIComponent(photo.id);
  const cacheKey = "heat" + photo.id + photo.sha256 + state.training.seconds;
  for (let tries = 0; tries < 120; tries++) {
    const shown = await picture(image, path, cacheKey);
    if (shown === true) return note.remove();
    if (shown === null) {
      note.textContent = image.alt || "no heat map";
      return image.remove();
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function act(action, item, photo, label) {
  const body = {action, sha256: photo.sha256};
  if (action === "keep") body.item = item.id;
  else body.photo = photo.id;
  if (label !== undefined) body.label = label;
  try {
    const done = await json("/api/actions", body);
    const as = done.to_label ? " as " + done.to_label : "";
    say(`${photo.id}: ${VERBS[done.action]}${as} (action ${done.id})`);
    advance();
  } catch (error) {
    say(error.message, true);
  }
  await load();
}

async function undoAction(id) {
  try {
    const done = await json("/api/undo", id === undefined ? {} : {action: id});
    say(`undid action ${done.undoes} (${done.photo || ""})`);
  } catch (error) {
    say(error.message, true);
  }
  await load();
}

function allTiles() {
  return [...document.querySelectorAll(".photo")];
}

function advance() {
  const tiles = allTiles();
  const here = tiles.findIndex((tile) => tile.dataset.key === selected);
  const next = tiles.slice(here + 1).find((tile) => !tile.classList.contains("acted"));
  if (next) selected = next.dataset.key;
}

function highlight(scroll = true) {
  for (const tile of allTiles()) {
    const on = tile.dataset.key === selected;
    tile.classList.toggle("selected", on);
    if (on && scroll) tile.scrollIntoView({block: "nearest"});
  }
}

function move(step) {
  const tiles = allTiles();
  if (!tiles.length) return;
  const here = tiles.findIndex((tile) => tile.dataset.key === selected);
  selected = tiles[Math.min(Math.max(here + step, 0), tiles.length - 1)].dataset.key;
  highlight();
}

function chosen() {
  const box = allTiles().find((tile) => tile.dataset.key === selected);
  if (!box || !state) return null;
  const item = state.items.find((candidate) => candidate.id === box.dataset.item);
  const photo = item && item.photos.find((candidate) => candidate.id === box.dataset.photo);
  return photo ? {box, item, photo} : null;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "INPUT") return;
  if (event.key === "u") return undoAction();
  const step = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1}[event.key];
  if (step) {
    event.preventDefault();
    return move(step);
  }
  const here = chosen();
  if (!here || here.box.classList.contains("acted")) return;
  const {box, item, photo} = here;
  if (/^[0-9]$/.test(event.key)) {
    const label = state.labels[(Number(event.key) + 9) % 10];
    if (label !== undefined) act("relabel", item, photo, label);
  } else if (event.key === "r" && photo.where === "data") act("remove", item, photo);
  else if (event.key === "k") act("keep", item, photo);
  else if (event.key === "h") showHeat(box, photo);
  else if (event.key === "n") {
    event.preventDefault();
    box.querySelector(".newlabel").focus();
  }
});

async function post(path) {
  try {
    await json(path, {});
  } catch (error) {
    say(error.message, true);
  }
  await load();
}

$("train").addEventListener("click", () => post("/api/train"));
$("refresh").addEventListener("click", () => post("/api/items/refresh"));
$("undo").addEventListener("click", () => undoAction());
$("keyform").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("tensorguess-review-key", key);
  $("keyform").hidden = true;
  load();
});
if (CONFIG.needs_key && !key) $("keyform").hidden = false;
else load();
</script>
</body>
</html>
"""
