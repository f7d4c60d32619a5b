// The page: load a manifest v3 (+ its models), generate from portable noise at a button press, draw it, time it;
// a benchmark mode writes the device-benchmark JSON (docs/device-benchmark.md) that `edgekd profile --import` reads.
// Everything the tests need is on window.edgekd.

import {NOISE_NAME, portableNoise} from "./lib/noise.js";
import {BACKENDS, createRuntime} from "./lib/runtimes.js";
import {checkManifest, sample, summarize, toRgba} from "./lib/sampler.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const manifestUrl = new URL(params.get("manifest") || "models/student.manifest.json", location.href);
const state = {manifest: null, runtime: null, firstRunMs: null, peakBytes: null, benchmark: null, last: null};
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
  $("model-line").textContent = `${m.name} · ${m.target} · ${m.precision} · ${steps} · ${manifestUrl.pathname}`;
  return m;
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
  const t1 = performance.now();
  const image = await sample(m, noise, (g, feeds) => state.runtime.run(g, feeds),
    (i, n) => n > 1 && status(`step ${i}/${n}`));
  const end = performance.now();
  if (first) {
    state.firstRunMs = end - t0;
    $("first-run").textContent = `${state.firstRunMs.toFixed(1)} ms`;
  }
  sampleMemory();
  return {seed, image, latencyMs: end - t1};
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
  status(`seed ${seed} done`);
  state.last = {seed, latencyMs: r.latencyMs, image: Array.from(r.image)};
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
  /** generate(seed) -> {seed, latencyMs, image: number[]} (the raw model output, before to_pixels) and draw it */
  async generate(seed) { $("seed").value = String(seed); return runGenerate(); },
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
