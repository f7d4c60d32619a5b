// What a manifest v3 says to do, free of any runtime: check the manifest, run its sampling section (one graph
// call, or the deterministic DDIM loop over step graphs), turn the image into pixels. The runtime (onnxruntime-web
// or LiteRT.js) is passed in as `runGraph(name, inputs) -> Float32Array`, so the same loop drives both.

export class ManifestError extends Error {}

const need = (cond, what) => {
  if (!cond) throw new ManifestError(`manifest: ${what}`);
};

/** Check the fields this app relies on (docs/manifest-v3.md); a wrong file fails here, not deep in a runtime. */
export function checkManifest(m) {
  need(m && typeof m === "object", "not a JSON object");
  need(m.format_version === 3, `format_version ${JSON.stringify(m.format_version)}; this app reads version 3 (re-export with this edgekd)`);
  need(["onnx", "tflite"].includes(m.target), `target ${JSON.stringify(m.target)}: the web app runs onnx and tflite`);
  need(Array.isArray(m.models) && m.models.length > 0, "models must list at least one graph");
  const names = new Set(m.models.map((g) => g.name));
  for (const g of m.models) {
    need(typeof g.file === "string" && !g.file.includes(".."), `model ${g.name}: bad file ${JSON.stringify(g.file)}`);
    need(Array.isArray(g.inputs) && g.inputs.length >= 1 && g.output && g.output.name, `model ${g.name}: inputs/output missing`);
  }
  const s = m.sampling || {};
  if (s.kind === "one_step") {
    need(names.has(s.graph), `sampling.graph ${JSON.stringify(s.graph)} is not in models`);
  } else if (s.kind === "ddim") {
    need(s.prediction === undefined || s.prediction === "epsilon", `sampling.prediction ${s.prediction}: only epsilon`);
    const n = s.timesteps?.length;
    need(n > 0, "sampling.timesteps is empty");
    for (const key of ["graph_per_step", "alphas_cumprod", "alphas_cumprod_prev"]) {
      need(Array.isArray(s[key]) && s[key].length === n, `sampling.${key} must have one entry per timestep (${n})`);
    }
    for (const g of s.graph_per_step) need(names.has(g), `sampling.graph_per_step names ${JSON.stringify(g)}, not in models`);
  } else {
    need(false, `sampling.kind ${JSON.stringify(s.kind)}: this app runs one_step and ddim`);
  }
  need(m.noise && Array.isArray(m.noise.shape), "noise.shape missing");
  need(m.noise.portable === "mulberry32-boxmuller-v1", `noise.portable ${JSON.stringify(m.noise.portable)}: this app generates mulberry32-boxmuller-v1`);
  return m;
}

/** The graph's input of a given role: the first input is the sample/noise, a second one is the timestep. */
function inputsFor(graph, x, timestep) {
  const [sample, t] = graph.inputs;
  const shape = sample.shape.map((d) => (typeof d === "number" ? d : 1));
  const feeds = [{name: sample.name, dtype: "float32", shape, data: x}];
  if (t) feeds.push({name: t.name, dtype: t.dtype, shape: t.shape.map((d) => (typeof d === "number" ? d : 1)), data: [timestep]});
  return feeds;
}

/**
 * Run the manifest's sampling section from `noise` (Float32Array of noise.shape). `runGraph(graph, feeds)`
 * returns the graph's output as a Float32Array. `onStep(i, n)` reports progress. Returns the image (Float32Array).
 */
export async function sample(m, noise, runGraph, onStep = () => {}) {
  const graphs = Object.fromEntries(m.models.map((g) => [g.name, g]));
  const s = m.sampling;
  if (s.kind === "one_step") {
    const g = graphs[s.graph];
    const out = await runGraph(g, inputsFor(g, noise, 0));
    onStep(1, 1);
    return out;
  }
  // DDIM, eta 0, as diffusers' DDIMScheduler.step (the manifest lists both alphas per step). float64 arithmetic,
  // stored as float32 between steps like the float32 tensors of the Python loop.
  const clip = s.clip_sample ? (s.clip_sample_range ?? 1.0) : null;
  let x = Float32Array.from(noise);
  const n = s.timesteps.length;
  for (let i = 0; i < n; i++) {
    const g = graphs[s.graph_per_step[i]];
    const eps = await runGraph(g, inputsFor(g, x, s.timesteps[i]));
    const a = s.alphas_cumprod[i], ap = s.alphas_cumprod_prev[i];
    const sa = Math.sqrt(a), s1a = Math.sqrt(1 - a), sap = Math.sqrt(ap), s1ap = Math.sqrt(1 - ap);
    const next = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      let x0 = Math.fround((x[k] - s1a * eps[k]) / sa);
      if (clip !== null) x0 = Math.min(clip, Math.max(-clip, x0));
      next[k] = sap * x0 + s1ap * eps[k];
    }
    x = next;
    onStep(i + 1, n);
  }
  return x;
}

/** pixel = round((clip(x, lo, hi) - lo) / (hi - lo) * 255) as uint8, cropped to image.crop; RGBA for a canvas. */
export function toRgba(m, image) {
  const [c, h, w] = m.noise.shape;
  const [lo, hi] = m.image?.range ?? [-1, 1];
  const [top, left, ch, cw] = m.image?.crop ?? [0, 0, h, w];
  const rgba = new Uint8ClampedArray(ch * cw * 4);
  const px = (v) => Math.round((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo) * 255);
  for (let y = 0; y < ch; y++) {
    for (let xx = 0; xx < cw; xx++) {
      const at = (y + top) * w + (xx + left);
      const o = (y * cw + xx) * 4;
      for (let k = 0; k < 3; k++) rgba[o + k] = px(image[(c === 3 ? k : 0) * h * w + at]);
      rgba[o + 3] = 255;
    }
  }
  return {width: cw, height: ch, rgba};
}

/** median and p90 as docs/device-benchmark.md defines them (p90: nearest rank, sorted[ceil(0.9 n) - 1]). */
export function summarize(samples) {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return {median, p90: s[Math.max(0, Math.ceil(0.9 * n) - 1)]};
}
