/* mediasearch search page: plain JS, no build step, talks to the daemon's HTTP API on the same origin.
 *
 * The token comes once in the URL (?token=, as `mediasearch serve` prints it), is kept in
 * sessionStorage and sent as a header; pictures and videos carry it as ?token= because an <img> or a
 * <video> cannot send headers. The search itself lives in the URL's hash (#q=...&type=video), so a
 * search can be bookmarked, reloaded and walked with Back and Forward. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "mediasearch.token";
  const PAGE = 60;
  const DPR = Math.min(window.devicePixelRatio || 1, 3);
  const THUMB = Math.min(1024, Math.round((320 * DPR) / 64) * 64);
  const VIEWER_SIZE = 1600;
  const BROWSER_IMAGES = /\.(jpe?g|png|webp|gif|avif|bmp)$/i;
  const HASH_KEYS = ["q", "not", "like", "type", "folder", "tag", "after", "before", "sort"];

  const state = {
    q: "", not: "", like: "", type: "", folder: "", tag: "", after: "", before: "", sort: "score",
    likeAt: null, image: null, limit: PAGE,
  };
  let token = "";
  let hits = [];
  let shown = 0;
  // A text search folds the results whose calibrated score is below this (the `--min-score` that
  // means "the query describes it"): the matches show, the rest wait behind "N weaker results".
  const WEAK_BELOW = 0.5;
  let strongCount = 0;
  let foldOpen = false;
  let inflight = null;
  // How the daemon read the text (`explain`), for the chips above the results; a removed chip's part
  // is left out of the query (the text is then sent literally, with the remaining parts as fields).
  let reading = null;
  let readingOf = null;
  let dropped = [];
  let current = -1;
  let returnFocus = null;
  let firstResults = true;
  let status = null;

  const grid = $("results");
  const viewer = $("viewer");

  // -- helpers -----------------------------------------------------------------------------------

  const enc = encodeURIComponent;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function icon(name) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "i");
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
    use.setAttribute("href", "#" + name);
    svg.append(use);
    return svg;
  }

  function basename(path) {
    return path.split(/[\\/]/).filter(Boolean).pop() || path;
  }

  function dirname(path) {
    const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
    return cut > 0 ? path.slice(0, cut) : "/";
  }

  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }

  function ago(when) {
    if (!when) return "never";
    const s = Math.max(0, Date.now() / 1000 - when);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(when * 1000).toLocaleDateString();
  }

  function plural(n, one, many) {
    return `${n.toLocaleString()} ${n === 1 ? one : many}`;
  }

  function nextDay(date) {
    if (!date) return null;
    const d = new Date(date + "T00:00:00");
    d.setDate(d.getDate() + 1);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  }

  function folderLabel(path) {
    // Relative to the watched folder that holds it ("Photos/2024/rome"), else the whole folder.
    const dir = dirname(path);
    const roots = (status && status.daemon && status.daemon.roots) || [];
    const root = roots.filter((r) => dir === r || dir.startsWith(r.replace(/\/$/, "") + "/"))
      .sort((a, b) => b.length - a.length)[0];
    return root ? basename(root) + dir.slice(root.replace(/\/$/, "").length) : dir;
  }

  function thumbUrl(path, at, size = THUMB) {
    const t = at !== null && at !== undefined ? `&t=${at}` : "";
    return `thumbnail?size=${size}&path=${enc(path)}${t}&token=${enc(token)}`;
  }

  function mediaUrl(path) {
    return `media?path=${enc(path)}&token=${enc(token)}`;
  }

  // -- the API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, code) { super(message); this.code = code; }
  }

  async function api(method, path, body, signal) {
    const headers = { "X-Mediasearch-Token": token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) {
      showTokenBox();
      throw new ApiError("the access token is missing or wrong", 401);
    }
    if (!response.ok) {
      const detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
      throw new ApiError(data.error || detail || `the daemon answered ${response.status}`, response.status);
    }
    return data;
  }

  function initToken() {
    const url = new URL(location.href);
    const given = url.searchParams.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      url.searchParams.delete("token");  // out of the address bar, the history and any screenshot
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    token = sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showTokenBox() {
    $("token-box").hidden = false;
    $("status-dot").className = "dot bad";
    $("status-text").textContent = "Token needed";
    $("welcome").hidden = true;
    $("toolbar").hidden = true;
    grid.replaceChildren();
    $("summary").replaceChildren();
    $("token-input").focus();
  }

  // -- state <-> URL and controls ----------------------------------------------------------------

  function toHash() {
    const params = new URLSearchParams();
    for (const key of HASH_KEYS) {
      if (state[key] && !(key === "sort" && state.sort === "score")) params.set(key, state[key]);
    }
    const text = params.toString();
    return text ? "#" + text : "";
  }

  function fromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const key of HASH_KEYS) state[key] = params.get(key) || (key === "sort" ? "score" : "");
    state.likeAt = null;
    state.image = null;
    state.limit = PAGE;
  }

  function remember() {
    const hash = toHash();
    if (hash !== location.hash) history.pushState(null, "", location.pathname + location.search + hash);
  }

  function toControls() {
    $("q").value = state.q;
    $("not").value = state.not;
    $("folder").value = state.folder;
    $("after").value = state.after;
    $("before").value = state.before;
    $("sort").value = state.sort;
    ensureTagOption(state.tag);
    $("tag").value = state.tag;
    for (const radio of document.querySelectorAll("input[name=type]")) radio.checked = radio.value === state.type;
    showChip();
    countFilters();
  }

  function fromControls() {
    if ($("q").value.trim() !== state.q) dropped = [];
    state.q = $("q").value.trim();
    state.not = $("not").value.trim();
    state.folder = $("folder").value.trim();
    state.after = $("after").value;
    state.before = $("before").value;
    state.sort = $("sort").value;
    state.tag = $("tag").value;
    state.type = document.querySelector("input[name=type]:checked")?.value || "";
    state.limit = PAGE;
    countFilters();
  }

  function countFilters() {
    const n = ["not", "type", "folder", "tag", "after", "before"].filter((k) => state[k]).length;
    $("filter-count").hidden = n === 0;
    $("filter-count").textContent = String(n);
    $("clear").hidden = n === 0;
  }

  function ensureTagOption(tag) {
    if (!tag || [...$("tag").options].some((o) => o.value === tag)) return;
    $("tag").append(new Option(tag, tag));
  }

  function showChip() {
    const chip = $("chip");
    if (state.image) {
      $("chip-img").src = state.image.preview;
      $("chip-label").textContent = state.image.name;
    } else if (state.like) {
      $("chip-img").src = thumbUrl(state.like, state.likeAt, 128);
      $("chip-label").textContent = "Like " + basename(state.like);
    }
    chip.hidden = !state.image && !state.like;
    chip.title = state.like || (state.image ? state.image.name : "");
    $("q").placeholder = chip.hidden ? "Describe what you're looking for…" : "Add words to refine…";
  }

  // -- searching ---------------------------------------------------------------------------------

  function filters() {
    return {
      kind: state.type || null,
      folder: state.folder || null,
      tags: state.tag ? [state.tag] : [],
      after: state.after || null,
      before: nextDay(state.before),
    };
  }

  function request() {
    if (state.like && !state.q && !state.not && !state.image) {
      return ["similar", { path: state.like, limit: state.limit, sort: state.sort, ...filters() }];
    }
    const terms = [];  // the text goes as `text`: the daemon reads dates, places and people out of it
    if (state.image) terms.push({ kind: "image", data: state.image.data });
    if (state.like) terms.push({ kind: "image", value: state.like });
    for (const word of state.not.split(",").map((w) => w.trim()).filter(Boolean)) {
      terms.push({ kind: "text", value: word, weight: -1 });
    }
    const body = { text: state.q || null, terms, limit: state.limit, sort: state.sort, ...filters() };
    return ["query", dropped.length && reading ? { ...body, ...readingFields() } : body];
  }

  // -- the parsed parts as chips -----------------------------------------------------------------

  function readingParts(r) {
    const parts = [];
    if (r.after || r.before) parts.push(["date", `${r.after || "…"} – ${r.before || "…"}`]);
    if (r.place) parts.push(["place", r.place.name]);
    for (const name of r.people || []) parts.push([`person:${name}`, name]);
    if (r.kind) parts.push(["kind", r.kind === "video" ? "Videos" : "Photos"]);
    if (r.ocr && r.ocr.length) parts.push(["ocr", `“${r.ocr.join(" ")}”`]);
    if (r.sort) parts.push(["sort", r.sort === "oldest" ? "Oldest first" : "Newest first"]);
    return parts;
  }

  function readingFields() {
    // The parts still wanted, as explicit fields of a literal query (a place by its name).
    const keep = (key) => !dropped.includes(key);
    const r = reading;
    return {
      literal: true,
      text: r.text || state.q,
      after: keep("date") ? r.after || state.after || null : state.after || null,
      before: keep("date") ? r.before || nextDay(state.before) : nextDay(state.before),
      place: keep("place") && r.place ? r.place.name : null,
      person: (r.people || []).filter((name) => keep(`person:${name}`)),
      kind: keep("kind") && r.kind ? r.kind : state.type || null,
      ocr: keep("ocr") ? r.ocr || [] : [],
      sort: keep("sort") && r.sort ? r.sort : state.sort,
    };
  }

  async function readText(signal) {
    if (!state.q || state.image || state.like) {
      reading = null;
      readingOf = null;
    } else if (readingOf !== state.q) {
      reading = await api("POST", "query", { text: state.q, explain: true }, signal);
      readingOf = state.q;
    }
    showReading();
  }

  function showReading() {
    const box = $("reading");
    const parts = reading ? readingParts(reading).filter(([key]) => !dropped.includes(key)) : [];
    box.replaceChildren();
    box.hidden = parts.length === 0;
    if (!parts.length) return;
    box.append(el("span", "reading-text", reading.text ? `“${reading.text}”` : "Filters only"));
    for (const [key, label] of parts) {
      const chip = el("span", "chip part");
      chip.dataset.part = key;
      const x = el("button", "chip-x");
      x.type = "button";
      x.setAttribute("aria-label", `Remove ${label}`);
      x.append(icon("i-close"));
      x.addEventListener("click", () => {
        dropped.push(key);
        state.limit = PAGE;
        search();
      });
      chip.append(el("span", "chip-label", label), x);
      box.append(chip);
    }
  }

  function describe() {
    const parts = [];
    if (state.q) parts.push(`for “${state.q}”`);
    if (state.like) parts.push(`like ${basename(state.like)}`);
    if (state.image) parts.push(`like ${state.image.name}`);
    if (state.not) parts.push(`without ${state.not}`);
    return parts.join(" ");
  }

  async function search({ focusFirst = false, append = false } = {}) {
    $("token-box").hidden = true;
    if (!state.q && !state.like && !state.image) {
      if (inflight) inflight.abort();
      showWelcome();
      return;
    }
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    grid.dataset.state = "loading";
    grid.setAttribute("aria-busy", "true");
    $("progress").hidden = false;
    const started = performance.now();
    try {
      await readText(ctl.signal);
      const [route, body] = request();
      const found = await api("POST", route, body, ctl.signal);
      if (inflight !== ctl) return;
      render(found, performance.now() - started, route, append);
      if (focusFirst) grid.querySelector(".thumb")?.focus();
    } catch (error) {
      if (error.name === "AbortError" || inflight !== ctl) return;
      if (error.code !== 401) showError(error.message);
    } finally {
      if (inflight === ctl) {
        inflight = null;
        $("progress").hidden = true;
        grid.removeAttribute("aria-busy");
      }
    }
  }

  function showWelcome() {
    hits = [];
    shown = 0;
    grid.replaceChildren();
    grid.dataset.state = "idle";
    $("summary").replaceChildren();
    $("toolbar").hidden = true;
    $("more").hidden = true;
    $("welcome").hidden = false;
  }

  function showError(message) {
    $("welcome").hidden = true;
    grid.replaceChildren();
    grid.dataset.state = "error";
    hits = [];
    const line = el("span", "error", message.charAt(0).toUpperCase() + message.slice(1));
    $("summary").replaceChildren(line);
    $("toolbar").hidden = false;
    $("more").hidden = true;
  }

  function render(found, ms, route, append) {
    const before = hits;
    const mode = route === "similar" ? "similar" : state.image || state.like ? "image" : "text";
    // Only a text query has a calibrated score that means "matches"; image queries list by similarity.
    // An item whose recognised text holds the query's words (hit.text) matches whatever CLIP thinks.
    const matches = (h) => h.calibrated >= WEAK_BELOW || Boolean(h.text);
    const strong = mode === "text" ? found.filter(matches) : found;
    const weak = mode === "text" ? found.filter((h) => !matches(h)) : [];
    hits = strong.concat(weak);
    strongCount = strong.length;
    if (!append) foldOpen = false;
    $("welcome").hidden = true;
    $("toolbar").hidden = false;
    $("summary").replaceChildren(...summaryLine(strong.length, weak.length, mode), ` ${describe()} · ${(ms / 1000).toFixed(2)} s`);
    // "Show more" asks again with a higher limit: keep the cards already there, add the new ones
    // (a new page of a text search holds weaker results: they join the fold).
    const keep = append && hits.length >= before.length && before.every((h, i) => h.path === hits[i].path)
      ? shown : 0;
    if (!keep) grid.replaceChildren();
    const fresh = [];
    for (let i = keep; i < hits.length; i++) {
      if (i === strong.length && !$("fold")) fresh.push(...foldRow(strong.length));
      const li = card(hits[i], i);
      if (i >= strong.length) {
        li.classList.add("weak");
        li.hidden = !foldOpen;
      }
      fresh.push(li);
    }
    if (found.length === 0) {
      const empty = el("li", "empty");
      empty.append(el("strong", null, "Nothing matches"), "Try other words, or fewer filters.");
      fresh.push(empty);
    }
    grid.append(...fresh);
    shown = hits.length;
    grid.dataset.state = found.length ? "ready" : "empty";
    grid.dataset.mode = mode;
    grid.dataset.matches = String(strong.length);
    grid.dataset.weak = String(weak.length);
    grid.dataset.fold = weak.length ? (foldOpen ? "open" : "closed") : "none";
    if (weak.length) setFold(foldOpen, false);
    $("more").hidden = found.length < state.limit;
    if (firstResults && found.length) {
      firstResults = false;
      performance.mark("mediasearch:results");
      markThumbs();
    }
  }

  function summaryLine(matches, weaker, mode) {
    if (mode !== "text") {
      return [el("strong", null, matches === 0 ? "No results" : plural(matches, "result", "results"))];
    }
    const parts = [el("strong", null, matches === 0 && weaker === 0 ? "No results" : plural(matches, "match", "matches"))];
    if (weaker) parts.push(` and ${plural(weaker, "weaker result", "weaker results")}`);
    return parts;
  }

  function foldRow(matches) {
    const rows = [];
    if (matches === 0) {
      const none = el("li", "empty few");
      none.append(el("strong", null, "No good matches"), "Nothing here fits the words well; the closest are folded below.");
      rows.push(none);
    }
    const fold = el("li", "fold");
    const button = el("button", "fold-toggle");
    button.type = "button";
    button.id = "fold";
    button.setAttribute("aria-expanded", String(foldOpen));
    button.append(el("span", "fold-label"), el("span", "fold-hint"));
    button.addEventListener("click", () => setFold(!foldOpen, true));
    fold.append(button);
    rows.push(fold);
    return rows;
  }

  function setFold(open, byUser) {
    foldOpen = open;
    const weak = grid.querySelectorAll(".card.weak");
    for (const li of weak) li.hidden = !open;
    const button = $("fold");
    if (button) {
      button.setAttribute("aria-expanded", String(open));
      button.querySelector(".fold-label").textContent = plural(weak.length, "weaker result", "weaker results");
      button.querySelector(".fold-hint").textContent = open ? "Hide" : "Show";
    }
    grid.dataset.fold = open ? "open" : "closed";
    if (open && byUser) weak[0]?.querySelector(".thumb")?.focus();
  }

  function visibleCount() {
    return foldOpen ? hits.length : strongCount;
  }

  function markThumbs() {
    const first = [...grid.querySelectorAll(".thumb .pic")].slice(0, 12);
    let left = first.length;
    const done = () => { if (--left === 0) performance.mark("mediasearch:thumbnails"); };
    for (const img of first) {
      if (img.complete) done();
      else {
        img.addEventListener("load", done, { once: true });
        img.addEventListener("error", done, { once: true });
      }
    }
  }

  function scoreBadge(hit) {
    const byText = Boolean(state.q);
    const badge = el("span", "badge score");
    if (byText) {
      badge.textContent = `${Math.round(hit.calibrated * 100)}%`;
      badge.title = `Relevance ${Math.round(hit.calibrated * 100)}% · similarity ${hit.score.toFixed(3)}`;
      if (hit.calibrated >= 0.8) badge.classList.add("high");
    } else {
      badge.textContent = hit.score.toFixed(2);
      badge.title = `Similarity ${hit.score.toFixed(3)}`;
    }
    return badge;
  }

  function moment(hit) {
    if (hit.start === null || hit.start === undefined) return "";
    return hit.end !== null && hit.end > hit.start ? `${clock(hit.start)} – ${clock(hit.end)}` : clock(hit.start);
  }

  function card(hit, i) {
    const name = basename(hit.path);
    const li = el("li", "card");
    Object.assign(li.dataset, { path: hit.path, kind: hit.kind, score: hit.score, calibrated: hit.calibrated, index: i });
    if (hit.kind === "video") {
      Object.assign(li.dataset, { start: hit.start ?? "", end: hit.end ?? "", timestamp: hit.timestamp ?? "" });
    }
    const open = el("button", "thumb");
    open.type = "button";
    open.setAttribute("aria-label", `Open ${name}${hit.kind === "video" ? " at " + clock(hit.start ?? 0) : ""}`);
    const img = new Image();
    img.alt = "";
    img.className = "pic";
    img.decoding = "async";
    img.loading = i < 18 ? "eager" : "lazy";
    const fill = new Image();
    fill.alt = "";
    fill.className = "fill";
    fill.setAttribute("aria-hidden", "true");
    img.addEventListener("load", () => {
      img.classList.add("loaded");
      fill.src = img.src;  // the same URL: from the cache
      fill.classList.add("loaded");
    }, { once: true });
    img.addEventListener("error", () => open.classList.add("broken"), { once: true });
    img.src = thumbUrl(hit.path, hit.kind === "video" ? hit.timestamp : null);
    open.append(fill, img, scoreBadge(hit));
    if (hit.kind === "video") {
      const badge = el("span", "badge moment");
      badge.append(icon("i-play"), moment(hit));
      open.append(badge);
    }
    const like = el("button", "like");
    like.type = "button";
    like.title = "More like this (M)";
    like.setAttribute("aria-label", `More like ${name}`);
    like.append(icon("i-similar"), el("span", null, "More like this"));
    const meta = el("div", "meta");
    const title = el("div", "name", name);
    title.title = hit.path;
    const folder = el("div", "folder");
    folder.append(el("span", null, folderLabel(hit.path)));
    folder.title = dirname(hit.path);
    meta.append(title, folder);
    if (hit.place) meta.append(el("div", "place", hit.place));
    if (hit.text) meta.append(recognised(hit.text, state.q || ""));
    if (hit.tags && hit.tags.length) meta.append(tagList(hit.tags.slice(0, 3)));
    li.append(open, like, meta);
    return li;
  }

  // The recognised text that matched (OCR), with the query's words marked: built from text nodes only.
  function recognised(text, query) {
    const box = el("div", "ocr");
    box.title = "Text in the picture";
    const fold = (s) => s.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
    const words = fold(query).split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 1);
    const folded = fold(text);
    let at = 0;
    const marks = [];
    for (const word of words) {
      for (let i = folded.indexOf(word); i >= 0; i = folded.indexOf(word, i + word.length)) marks.push([i, i + word.length]);
    }
    marks.sort((a, b) => a[0] - b[0]);
    for (const [start, end] of marks) {
      if (start < at || folded.length !== text.length) continue;
      box.append(document.createTextNode(text.slice(at, start)), el("mark", null, text.slice(start, end)));
      at = end;
    }
    box.append(document.createTextNode(text.slice(at)));
    return box;
  }

  function tagList(tags) {
    const box = el("div", "tags");
    for (const tag of tags) {
      const button = el("button", "tag", tag);
      button.type = "button";
      button.dataset.tag = tag;
      button.title = `Only items tagged “${tag}”`;
      box.append(button);
    }
    return box;
  }

  // -- actions -----------------------------------------------------------------------------------

  function submit() {
    fromControls();
    remember();
    search();
  }

  function moreLike(hit) {
    if (viewer.open) viewer.close();
    state.like = hit.path;
    state.likeAt = hit.kind === "video" ? hit.timestamp : null;
    state.q = state.not = "";
    state.image = null;
    state.limit = PAGE;
    toControls();
    remember();
    window.scrollTo({ top: 0, behavior: "smooth" });
    search({ focusFirst: true });
  }

  function byTag(tag) {
    if (viewer.open) viewer.close();
    state.tag = tag;
    state.limit = PAGE;
    if (!state.q && !state.like && !state.image) state.q = tag;
    toControls();
    remember();
    search();
  }

  async function shrink(file) {
    // The model sees a small square: send a 640 px JPEG rather than a 12 MP original.
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(1, 640 / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
      return { blob, data: await dataUrl(blob) };
    } catch {
      return { blob: file, data: await dataUrl(file) };  // the browser can't decode it: let the daemon try
    }
  }

  function dataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function searchByImage(file) {
    if (!file || !(file.type.startsWith("image/") || /\.(heic|heif|tiff?)$/i.test(file.name))) {
      showError("that is not an image: drop or pick a photo to search by it");
      return;
    }
    const { blob, data } = await shrink(file);
    if (state.image) URL.revokeObjectURL(state.image.preview);
    state.image = { data, preview: URL.createObjectURL(blob), name: file.name || "pasted image" };
    state.like = "";
    state.likeAt = null;
    state.q = "";
    state.limit = PAGE;
    toControls();
    remember();
    search({ focusFirst: false });
  }

  function clearExample() {
    if (state.image) URL.revokeObjectURL(state.image.preview);
    state.image = null;
    state.like = "";
    state.likeAt = null;
    showChip();
    remember();
    search();
    $("q").focus();
  }

  // -- the viewer --------------------------------------------------------------------------------

  function openViewer(index) {
    if (index < 0 || index >= visibleCount()) return;
    if (!viewer.open) returnFocus = document.activeElement;
    current = index;
    const hit = hits[index];
    const name = basename(hit.path);
    $("v-name").textContent = name;
    $("v-folder").textContent = dirname(hit.path);
    $("v-open").href = mediaUrl(hit.path);
    $("v-prev").disabled = index === 0;
    $("v-next").disabled = index === visibleCount() - 1;
    viewer.dataset.path = hit.path;
    viewer.dataset.kind = hit.kind;
    facts(hit);
    const tags = $("v-tags");
    tags.replaceChildren(...(hit.tags && hit.tags.length ? [...tagList(hit.tags).children] : []));
    stopMedia();
    if (hit.kind === "video") showVideo(hit);
    else showImage(hit);
    if (!viewer.open) viewer.showModal();
  }

  function facts(hit) {
    const rows = [["Type", hit.kind === "video" ? "Video" : "Photo"]];
    if (state.q) rows.push(["Relevance", `${Math.round(hit.calibrated * 100)}%`]);
    rows.push(["Similarity", hit.score.toFixed(3)]);
    if (hit.kind === "video" && hit.timestamp !== null) rows.push(["Best frame", clock(hit.timestamp)]);
    const list = $("v-facts");
    list.replaceChildren();
    for (const [term, value] of rows) list.append(el("dt", null, term), el("dd", null, value));
  }

  function stopMedia() {
    const old = $("v-media").querySelector("video");
    if (old) {
      old.pause();
      old.removeAttribute("src");
      old.load();  // stops the download
    }
    $("v-media").replaceChildren();
  }

  function showImage(hit) {
    $("v-moment").hidden = true;
    const img = new Image();
    img.alt = basename(hit.path);
    img.src = thumbUrl(hit.path, null);  // already in the cache: shows at once
    const full = new Image();
    full.addEventListener("load", () => { if (hits[current] === hit) img.src = full.src; }, { once: true });
    full.src = BROWSER_IMAGES.test(hit.path) ? mediaUrl(hit.path) : thumbUrl(hit.path, null, VIEWER_SIZE);
    $("v-media").replaceChildren(img);
  }

  function showVideo(hit) {
    const start = hit.start ?? hit.timestamp ?? 0;
    const video = document.createElement("video");
    video.controls = true;
    video.playsInline = true;
    video.preload = "auto";
    video.poster = thumbUrl(hit.path, hit.timestamp);
    video.src = `${mediaUrl(hit.path)}#t=${start}`;  // the media fragment starts it at the moment
    video.addEventListener("loadedmetadata", () => {
      if (Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
      track(hit, video.duration);
      video.play().catch(() => {});  // autoplay may be refused: the controls are there
    }, { once: true });
    video.addEventListener("error", () => {
      const note = el("p", "v-error", "This video cannot be played in the browser. Use “Original” to open it.");
      $("v-media").replaceChildren(note);
    }, { once: true });
    $("v-moment-text").textContent = `Moment ${moment(hit)}`;
    $("v-span").style.left = "0";
    $("v-span").style.width = "0";
    $("v-moment").hidden = false;
    $("v-media").replaceChildren(video);
  }

  function track(hit, duration) {
    if (!duration || !isFinite(duration)) return;
    const start = hit.start ?? 0;
    const end = Math.max(hit.end ?? start, start);
    const step = Math.min(2, duration / 20);  // frames are sampled about every 2 s: show the moment's span
    $("v-span").style.left = `${(100 * start) / duration}%`;
    $("v-span").style.width = `${(100 * Math.min(duration - start, end - start + step)) / duration}%`;
  }

  function replay() {
    const hit = hits[current];
    const video = $("v-media").querySelector("video");
    if (!hit || !video) return;
    video.currentTime = hit.start ?? 0;
    video.play().catch(() => {});
  }

  async function copyPath() {
    const hit = hits[current];
    if (!hit) return;
    const button = $("v-copy");
    try {
      await navigator.clipboard.writeText(hit.path);
      button.lastChild.textContent = "Copied";
    } catch {
      button.lastChild.textContent = "Copy failed";
    }
    setTimeout(() => { button.lastChild.textContent = "Copy path"; }, 1500);
  }

  // -- keyboard ----------------------------------------------------------------------------------

  function columns() {
    return getComputedStyle(grid).gridTemplateColumns.split(" ").filter(Boolean).length || 1;
  }

  function onGridKey(event) {
    const li = event.target.closest(".card");
    if (!li) return;
    const index = Number(li.dataset.index);
    const moves = {
      ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns(),
      Home: -index, End: visibleCount() - 1 - index,
    };
    if (event.key in moves) {
      const target = Math.min(visibleCount() - 1, Math.max(0, index + moves[event.key]));
      grid.querySelectorAll(".card")[target]?.querySelector(".thumb")?.focus();
      event.preventDefault();
    } else if ((event.key === "m" || event.key === "M") && !event.ctrlKey && !event.metaKey) {
      moreLike(hits[index]);
      event.preventDefault();
    }
  }

  function onViewerKey(event) {
    if (event.target.tagName === "VIDEO") return;  // its own controls use the arrows
    if (event.key === "ArrowRight") openViewer(current + 1);
    else if (event.key === "ArrowLeft") openViewer(current - 1);
    else if (event.key === "m" || event.key === "M") moreLike(hits[current]);
    else return;
    event.preventDefault();
  }

  function onGlobalKey(event) {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
    if (event.key === "/" && !typing && !viewer.open) {
      $("q").focus();
      $("q").select();
      event.preventDefault();
    } else if (event.key === "Escape" && event.target === $("q") && !$("q").value) {
      $("q").blur();
    }
  }

  // -- status, tags, folders ---------------------------------------------------------------------

  async function refreshStatus() {
    try {
      status = await api("GET", "status");
    } catch (error) {
      $("status-dot").className = "dot bad";
      $("status-text").textContent = error.code === 401 ? "Token needed" : "Daemon not reachable";
      return;
    }
    const daemon = status.daemon || {};
    const busy = daemon.busy || (daemon.pending_folders || 0) > 0;
    const changed = daemon.last_change || (status.last_run && status.last_run.finished);
    $("status-dot").className = busy ? "dot busy" : "dot ok";
    const text = $("status-text");
    text.replaceChildren(el("strong", null, plural(status.files, "item", "items")),
      busy ? " · indexing…" : ` · updated ${ago(changed)}`);
    const model = status.model || {};
    const rows = [
      ["Photos", status.images.toLocaleString()],
      ["Videos", `${status.videos.toLocaleString()} (${plural(status.frames, "frame", "frames")})`],
      ["Model", model.name ? model.name + (model.pretrained ? ` · ${model.pretrained}` : "") : "—"],
      ["Last change", changed ? new Date(changed * 1000).toLocaleString() : "—"],
      ["Folders", (daemon.roots || []).join("\n") || "—"],
      ["State", busy ? "indexing" : daemon.state || "ready"],
    ];
    const list = $("status-details");
    list.replaceChildren();
    for (const [term, value] of rows) list.append(el("dt", null, term), el("dd", null, value));
    const folders = $("folders");
    folders.replaceChildren(...(daemon.roots || []).map((root) => new Option(root)));
    for (const folder of grid.querySelectorAll(".folder")) folder.firstChild.textContent = folderLabel(folder.title + "/x");
    welcomeTitle();
  }

  function welcomeTitle() {
    if (!status) return;
    const title = $("welcome-title");
    if (status.files === 0) {
      title.textContent = "Nothing is indexed yet";
      $("welcome").querySelector(".lede").textContent =
        "Add folders with `mediasearch index ~/Pictures`, or start the daemon with them: `mediasearch serve ~/Pictures`.";
      return;
    }
    const parts = [];
    if (status.images) parts.push(plural(status.images, "photo", "photos"));
    if (status.videos) parts.push(plural(status.videos, "video", "videos"));
    title.textContent = `Search ${parts.join(" and ")} by what they show`;
  }

  async function loadTags() {
    let counts;
    try {
      counts = await api("GET", "tags");
    } catch {
      return;
    }
    const sorted = Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const select = $("tag");
    select.replaceChildren(new Option("Any tag", ""), ...sorted.map(([tag, n]) => new Option(`${tag} (${n})`, tag)));
    select.value = state.tag;
    ensureTagOption(state.tag);
    select.value = state.tag;
    const box = $("suggestions");
    box.replaceChildren();
    for (const [tag] of sorted.slice(0, 12)) {
      const button = el("button", null, tag);
      button.type = "button";
      button.addEventListener("click", () => { state.q = tag; state.like = ""; state.image = null; toControls(); remember(); search(); });
      box.append(button);
    }
  }

  // -- people (GET /people): a row of faces; a click lists the person's files, a name renames ----

  const VIDEO_EXT = /\.(mp4|mov|m4v|mkv|webm|avi|mts|m2ts|ts|3gp|wmv|mpg|mpeg)$/i;

  async function loadPeople() {
    let people;
    try {
      people = await api("GET", "people");
    } catch {
      return;
    }
    const list = $("people-list");
    list.replaceChildren(...people.slice(0, 24).map(personItem));
    $("people").hidden = people.length === 0;
  }

  function personLabel(person) {
    return person.name || "Add a name";
  }

  function personItem(person) {
    const li = el("li", "person");
    li.dataset.person = person.id;
    const face = el("button", "face");
    face.type = "button";
    face.title = `${person.name || "Unnamed person"}: ${plural(person.files.length, "file", "files")}`;
    const img = new Image(64, 64);
    img.alt = "";
    img.src = `people/${enc(person.id)}/face?size=96&token=${enc(token)}`;
    face.append(img);
    face.addEventListener("click", () => showPerson(person));
    const name = el("button", person.name ? "name" : "name unnamed", personLabel(person));
    name.type = "button";
    name.title = "Rename";
    name.addEventListener("click", () => renamePerson(person, li, name));
    li.append(face, name, el("span", "count", plural(person.faces, "face", "faces")));
    return li;
  }

  function renamePerson(person, li, label) {
    const input = el("input", "rename");
    input.value = person.name || "";
    input.setAttribute("aria-label", "Name");
    label.replaceWith(input);
    input.focus();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const wanted = input.value.trim();
      if (save && wanted && wanted !== person.name) {
        try {
          Object.assign(person, await api("POST", `people/${enc(person.id)}/name`, { name: wanted }));
        } catch (error) {
          showError(error.message);
        }
      }
      label.textContent = personLabel(person);
      label.className = person.name ? "name" : "name unnamed";
      input.replaceWith(label);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") { event.stopPropagation(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
  }

  function showPerson(person) {
    if (inflight) inflight.abort();
    hits = person.files.map((path) => ({
      path, kind: VIDEO_EXT.test(path) ? "video" : "image", score: 1, calibrated: 1, tags: [],
      timestamp: null, start: null, end: null,
    }));
    strongCount = hits.length;
    foldOpen = false;
    $("welcome").hidden = true;
    $("toolbar").hidden = false;
    $("more").hidden = true;
    $("summary").replaceChildren(el("strong", null, person.name || "Unnamed person"), ` · ${plural(hits.length, "file", "files")}`);
    grid.replaceChildren(...hits.map((hit, i) => {
      const li = card(hit, i);
      li.querySelector(".badge.score")?.remove();
      return li;
    }));
    shown = hits.length;
    grid.dataset.state = "ready";
    grid.dataset.mode = "person";
  }

  // -- duplicates (POST /duplicates): groups of copies, each a row of thumbnails ----------------

  async function showDuplicates() {
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    hits = [];
    shown = 0;
    grid.replaceChildren();
    Object.assign(grid.dataset, { state: "loading", mode: "duplicates" });
    $("welcome").hidden = true;
    $("toolbar").hidden = false;
    $("more").hidden = true;
    $("summary").replaceChildren("Looking for copies…");
    $("progress").hidden = false;
    const started = performance.now();
    try {
      const groups = await api("POST", "duplicates", {}, ctl.signal);
      if (inflight !== ctl) return;
      const files = groups.reduce((n, g) => n + g.paths.length, 0);
      const count = el("strong", null, groups.length ? plural(groups.length, "group", "groups") : "No duplicates");
      const rest = groups.length ? ` of copies, ${plural(files, "file", "files")}` : "";
      $("summary").replaceChildren(count, `${rest} · ${((performance.now() - started) / 1000).toFixed(2)} s`);
      grid.append(...groups.map(duplicateGroup));
      grid.dataset.state = groups.length ? "ready" : "empty";
    } catch (error) {
      if (error.name !== "AbortError" && inflight === ctl && error.code !== 401) showError(error.message);
    } finally {
      if (inflight === ctl) {
        inflight = null;
        $("progress").hidden = true;
      }
    }
  }

  function duplicateGroup(group) {
    const li = el("li", "dup-group");
    li.dataset.kind = group.kind;
    const what = group.kind === "exact" ? "identical files"
      : `copies, ${(group.similarity * 100).toFixed(1)} % alike`;
    li.append(el("p", "dup-head", `${group.paths.length} ${what}`));
    const row = el("div", "dup-row");
    for (const path of group.paths) {
      const link = el("a", "dup-file");
      Object.assign(link, { href: mediaUrl(path), target: "_blank", rel: "noopener noreferrer", title: path });
      link.dataset.path = path;
      const img = el("img", "pic");
      Object.assign(img, { src: thumbUrl(path, null), alt: "", loading: "lazy" });
      link.append(img, el("span", "dup-name", basename(path)), el("span", "dup-folder", folderLabel(path)));
      row.append(link);
    }
    li.append(row);
    return li;
  }

  $("dups").addEventListener("click", showDuplicates);

  // -- wiring ------------------------------------------------------------------------------------

  function wire() {
    $("search").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
    for (const id of ["tag", "after", "before", "sort", "folder"]) {
      $(id).addEventListener("change", () => { if (state.q || state.like || state.image) submit(); else fromControls(); });
    }
    for (const radio of document.querySelectorAll("input[name=type]")) {
      radio.addEventListener("change", () => { if (state.q || state.like || state.image) submit(); else fromControls(); });
    }
    $("clear").addEventListener("click", () => {
      Object.assign(state, { not: "", type: "", folder: "", tag: "", after: "", before: "", sort: "score" });
      toControls();
      remember();
      search();
    });
    $("filters-toggle").addEventListener("click", () => {
      const open = $("filters").classList.toggle("open");
      $("filters-toggle").setAttribute("aria-expanded", String(open));
    });
    $("pick").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", () => {
      const file = $("file").files[0];
      $("file").value = "";
      if (file) searchByImage(file);
    });
    $("chip-x").addEventListener("click", clearExample);
    $("more").addEventListener("click", () => {
      state.limit += PAGE;
      search({ append: true });
    });
    grid.addEventListener("click", (event) => {
      const li = event.target.closest(".card");
      if (!li) return;
      const hit = hits[Number(li.dataset.index)];
      const tag = event.target.closest(".tag");
      if (tag) byTag(tag.dataset.tag);
      else if (event.target.closest(".like")) moreLike(hit);
      else if (event.target.closest(".thumb")) openViewer(Number(li.dataset.index));
    });
    grid.addEventListener("keydown", onGridKey);
    document.addEventListener("keydown", onGlobalKey);
    wireViewer();
    wireDrop();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token-box").hidden = true;
      start();
    });
    window.addEventListener("popstate", () => { fromHash(); toControls(); search(); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshStatus(); });
    setInterval(() => { if (!document.hidden && token) refreshStatus(); }, 20000);
  }

  function wireViewer() {
    $("v-close").addEventListener("click", () => viewer.close());
    $("v-prev").addEventListener("click", () => openViewer(current - 1));
    $("v-next").addEventListener("click", () => openViewer(current + 1));
    $("v-like").addEventListener("click", () => moreLike(hits[current]));
    $("v-replay").addEventListener("click", replay);
    $("v-copy").addEventListener("click", copyPath);
    $("v-tags").addEventListener("click", (event) => {
      const tag = event.target.closest(".tag");
      if (tag) byTag(tag.dataset.tag);
    });
    viewer.addEventListener("keydown", onViewerKey);
    viewer.addEventListener("click", (event) => { if (event.target === viewer) viewer.close(); });
    viewer.addEventListener("close", () => {
      stopMedia();
      const card = grid.querySelectorAll(".card")[current];
      (card?.querySelector(".thumb") || returnFocus)?.focus();
    });
  }

  function wireDrop() {
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    window.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth++;
      $("drop").hidden = false;
    });
    window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
    window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
    window.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      $("drop").hidden = true;
      searchByImage(event.dataTransfer.files[0]);
    });
    window.addEventListener("paste", (event) => {
      const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (file) {
        event.preventDefault();
        searchByImage(file);
      }
    });
  }

  function start() {
    fromHash();
    toControls();
    if (!state.q && !state.like) $("q").focus();
    // The results first: the status and the tags wait for them rather than compete with them.
    search().finally(() => {
      refreshStatus();
      loadTags();
      loadPeople();
    });
  }

  initToken();
  wire();
  if (!token) showTokenBox();
  else start();
})();
