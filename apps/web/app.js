// The page: load a manifest v3 or v4 (+ its models, and for a text model its tokenizer files), ask for the condition
// a v4 model takes (a class picker, or a prompt box), generate from portable noise at a button press, draw it, time it;
// a benchmark mode writes the device-benchmark JSON (docs/device-benchmark.md) that `edgekd profile --import` reads.
// Everything the tests need is on window.edgekd.

import {NOISE_NAME, portableNoise} from "./lib/noise.js";
import {BACKENDS, createRuntime} from "./lib/runtimes.js";
import {checkManifest, sample, summarize, toRgba} from "./lib/sampler.js";
import {ClipBpeTokenizer} from "./lib/clip_bpe.js";
import {sha256Hex} from "./lib/runtimes.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const manifestUrl = new URL(params.get("manifest") || "models/student.manifest.json", location.href);
const state = {manifest: null, runtime: null, firstRunMs: null, peakBytes: null, benchmark: null, last: null,
               tokenizer: null};
// the backend asked for (the select, or ?backend=); the runtime may fall back to wasm and says why
let requestedBackend = "wasm";

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function sampleMemory() {
  // Chromium's non-standard performance.memory: the JS heap (wasm linear memory is not counted); null elsewhere
  const used = performance.memory?.usedJSHeapSize;
  if (typeof used === "number") state.peakBytes = Math.max(state.peakBytes ?? 0, used);
}

async function loadManifest() {
  const res = await fetch(manifestUrl);
  if (!res.ok) {
    throw new Error(`no manifest at ${manifestUrl.pathname} (HTTP ${res.status}): run \`edgekd export RUN --target onnx --into-app web\`, or \`edgekd demo RUN\`, or open ?manifest=URL`);
  }
  const m = checkManifest(await res.json());
  const s = m.sampling;
  const steps = s.kind === "ddim" ? `DDIM-${s.timesteps.length} over ${m.models.length} graph(s)` : "one step";
  const c = m.condition;
  const cond = !c ? "" : c.kind === "class" ? ` · ${c.num_classes} classes` : " · text prompt";
  const stages = m.format_version === 4 && m.models.length > 1 ? ` · ${m.models.map((g) => g.name).join(" → ")}` : "";
  $("model-line").textContent = `${m.name} · ${m.target} · ${m.precision} · ${steps}${cond}${stages} · ${manifestUrl.pathname}`;
  if (c?.kind === "text") state.tokenizer = await loadTokenizer(c.tokenizer);
  return m;
}

/** A text model's vocab.json + merges.txt, from beside the manifest, checked against the manifest's sha256. */
async function loadTokenizer(spec) {
  const text = {};
  for (const key of ["vocab", "merges"]) {
    const url = new URL(spec.files[key], manifestUrl);
    const res = await fetch(url);
    if (!res.ok) throw new Error(`tokenizer file ${url.pathname} -> HTTP ${res.status} (copy the export's tokenizer/ folder too)`);
    const bytes = await res.arrayBuffer();
    const want = spec.sha256?.[key];
    if (want && (await sha256Hex(bytes)) !== want) throw new Error(`${spec.files[key]}: sha256 differs from the manifest's (re-copy the export)`);
    text[key] = new TextDecoder().decode(bytes);
  }
  return ClipBpeTokenizer.fromText(text.vocab, text.merges, spec);
}

/** Show the picker a v4 condition needs: a class select (names, or ids), or a prompt box (the first example). */
function setupCondition(m) {
  const c = m.condition;
  if (c?.kind === "class") {
    const select = $("class");
    select.replaceChildren(...Array.from({length: c.num_classes}, (_, id) => {
      const name = c.names?.[id];
      return new Option(name ? `${id} · ${name}` : `class ${id}`, String(id));
    }));
    select.value = String(c.default ?? 0);
    $("class-box").hidden = false;
  } else if (c?.kind === "text") {
    $("prompt").value = c.example_prompts?.[0] ?? "";
    $("prompt-box").hidden = false;
  }
}

/** The condition the pickers say now: {class} or {prompt, input_ids}; null for an unconditional model. */
function currentCondition() {
  const c = state.manifest.condition;
  if (c?.kind === "class") return {class: Number($("class").value)};
  if (c?.kind === "text") {
    const prompt = $("prompt").value;
    return {prompt, input_ids: state.tokenizer.encode(prompt)};
  }
  return null;
}

/** Set the picker from a class id / name (class model) or a prompt (text model), as a user would. */
function chooseCondition(value) {
  const c = state.manifest.condition;
  if (!c) throw new Error("this model takes no condition");
  if (c.kind === "text") {
    $("prompt").value = String(value);
    return;
  }
  const id = typeof value === "number" ? value : (c.names ?? []).indexOf(value);
  if (!Number.isInteger(id) || id < 0 || id >= c.num_classes) {
    throw new Error(`class ${JSON.stringify(value)}: choose an id 0..${c.num_classes - 1}${c.names ? " or a name" : ""}`);
  }
  $("class").value = String(id);
}

async function ensureRuntime() {
  if (state.runtime) return;
  status("loading models...");
  state.runtime = await createRuntime(state.manifest, manifestUrl, requestedBackend);
  const r = state.runtime.info;
  const note = state.runtime.fallback ? ` · ${state.runtime.fallback}` : "";
  $("runtime").textContent = `${r.name} ${r.version} · ${r.backend} · ${r.threads} thread(s)${self.crossOriginIsolated ? " · isolated" : ""}${note}`;
}

/** A new backend choice: the next Generate loads the models again on it (and times that load as its first run). */
function chooseBackend(value) {
  if (!BACKENDS.includes(value)) throw new Error(`backend ${JSON.stringify(value)}: choose ${BACKENDS.join(" or ")}`);
  $("backend").value = value;
  if (value === requestedBackend) return;
  requestedBackend = value;
  state.runtime = null;
  state.firstRunMs = null;
  $("runtime").textContent = `${value} chosen: loads at the next Generate`;
}

/** One image: noise of `seed` -> sampling section -> image (Float32Array); returns it with the sampling time. */
async function generate(seed) {
  const m = state.manifest;
  const first = state.firstRunMs === null;
  const t0 = performance.now();
  await ensureRuntime();
  const noise = portableNoise(seed, m.noise.shape);
  const condition = currentCondition();
  const t1 = performance.now();
  const image = await sample(m, noise, (g, feeds) => state.runtime.run(g, feeds),
    (i, n) => n > 1 && status(`step ${i}/${n}`), condition && (condition.input_ids ?? condition.class));
  const end = performance.now();
  if (first) {
    state.firstRunMs = end - t0;
    $("first-run").textContent = `${state.firstRunMs.toFixed(1)} ms`;
  }
  sampleMemory();
  return {seed, condition, image, latencyMs: end - t1};
}

function draw(image) {
  const {width, height, rgba} = toRgba(state.manifest, image);
  const canvas = $("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
}

async function onGenerate() {
  const seed = Number($("seed").value) >>> 0;
  const r = await generate(seed);
  draw(r.image);
  $("latency").textContent = `${r.latencyMs.toFixed(2)} ms`;
  const what = r.condition ? ("class" in r.condition ? ` · class ${r.condition.class}` : ` · "${r.condition.prompt}"`) : "";
  status(`seed ${seed}${what} done`);
  state.last = {seed, condition: r.condition, latencyMs: r.latencyMs, image: Array.from(r.image)};
  return state.last;
}

function deviceInfo() {
  const ua = navigator.userAgent;
  const os = navigator.userAgentData?.platform || navigator.platform || "unknown";
  const brand = navigator.userAgentData?.brands?.find((b) => !/Not.?A.?Brand/i.test(b.brand));
  const browser = brand ? `${brand.brand} ${brand.version}` : ua.split(" ").pop();
  const name = $("device").value.trim() || `${browser} on ${os}`;
  return {name, platform: "web", os, user_agent: ua};
}

/** Benchmark: `warmup` runs, then `runs` timed runs (sampling only); first_run_ms includes the model load. */
async function benchmark({runs = 20, warmup = 3, seed = 0} = {}) {
  if (state.firstRunMs === null) await generate(seed);
  for (let i = 0; i < warmup; i++) await generate(seed + i);
  const samples = [];
  for (let i = 0; i < runs; i++) {
    samples.push((await generate(seed + i)).latencyMs);
    status(`benchmark ${i + 1}/${runs}`);
  }
  const {median, p90} = summarize(samples);
  const m = state.manifest;
  state.benchmark = {
    schema: "edgekd.device-benchmark", version: 1,
    device: deviceInfo(),
    runtime: {...state.runtime.info},
    model: {manifest: manifestUrl.pathname.split("/").pop(), name: m.name, target: m.target, precision: m.precision,
            sha256: m.models.map((g) => g.sha256)},
    warmup, runs,
    first_run_ms: state.firstRunMs,
    latency_ms: {median, p90, samples},
    peak_memory_mb: state.peakBytes === null ? null : state.peakBytes / 2 ** 20,
    created: new Date().toISOString(),
  };
  $("latency").textContent = `median ${median.toFixed(2)} ms · p90 ${p90.toFixed(2)} ms (${runs} runs)`;
  $("result").textContent = JSON.stringify(state.benchmark, null, 2);
  $("result").hidden = false;
  $("download").disabled = false;
  status("benchmark done");
  return state.benchmark;
}

function download() {
  const blob = new Blob([JSON.stringify(state.benchmark, null, 2)], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `edgekd-benchmark-${state.manifest.name}-${state.manifest.target}.json`;
  a.click();
  URL.revokeObjectURL(a.href);
}

function guard(fn) {
  return async (...args) => {
    for (const b of ["generate", "benchmark"]) $(b).disabled = true;
    try {
      return await fn(...args);
    } catch (err) {
      status(String(err.message || err), true);
      window.edgekd.error = String(err.message || err);
      throw err;
    } finally {
      for (const b of ["generate", "benchmark"]) $(b).disabled = false;
    }
  };
}

const runGenerate = guard(onGenerate);
const runBenchmark = guard((opts) => benchmark(opts ?? {runs: Number($("runs").value), warmup: Number($("warmup").value)}));

window.edgekd = {
  ready: false, error: null, noise: NOISE_NAME, portableNoise,
  get manifest() { return state.manifest; },
  get last() { return state.last; },
  get lastBenchmark() { return state.benchmark; },
  /** {requested, used (null before the first load), fallback (why used is not requested, or null)} */
  get backend() {
    return {requested: requestedBackend, used: state.runtime?.info.backend ?? null, fallback: state.runtime?.fallback ?? null};
  },
  chooseBackend: (value) => chooseBackend(value),
  /** generate(seed[, condition]) -> {seed, condition, latencyMs, image: number[]} (the model's output before
   * to_pixels) and draw it; `condition` (a class id or name, or a prompt) sets the picker first */
  async generate(seed, condition) {
    if (condition !== undefined) chooseCondition(condition);
    $("seed").value = String(seed);
    return runGenerate();
  },
  chooseCondition: (value) => chooseCondition(value),
  /** a text model's input_ids for `prompt` (the page's tokenizer, lib/clip_bpe.js) */
  tokenize: (prompt) => state.tokenizer.encode(prompt),
  benchmark: (opts) => runBenchmark(opts),
};

$("generate").addEventListener("click", () => runGenerate().catch(() => {}));
$("benchmark").addEventListener("click", () => runBenchmark().catch(() => {}));
$("download").addEventListener("click", download);
$("backend").addEventListener("change", () => chooseBackend($("backend").value));
// offered where the API exists; whether an adapter is there too is found out at load (else: wasm, and why)
$("backend").querySelector('option[value="webgpu"]').disabled = !navigator.gpu;
if (params.has("seed")) $("seed").value = params.get("seed");
if (params.has("device")) $("device").value = params.get("device");

loadManifest().then((m) => {
  state.manifest = m;
  setupCondition(m);
  if (params.has("backend")) chooseBackend(params.get("backend"));
  window.edgekd.ready = true;
  $("generate").disabled = false;
  $("benchmark").disabled = false;
  status("ready");
}).catch((err) => {
  window.edgekd.error = String(err.message || err);
  status(window.edgekd.error, true);
  $("model-line").textContent = "no model loaded";
});
