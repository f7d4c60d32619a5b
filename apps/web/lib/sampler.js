// What a manifest (version 3, or version 4's pipeline) says to do, free of any runtime: check the manifest, run the
// condition stage (class id as is; prompt -> token ids -> text-encoder graph), the sampling section (one graph call,
// or the deterministic DDIM loop over step graphs), the decode stage, and turn the image into pixels. The runtime
// (onnxruntime-web or LiteRT.js) is passed in as `runGraph(graph, feeds) -> Float32Array`, so the same code drives
// both.

export class ManifestError extends Error {}

const need = (cond, what) => {
  if (!cond) throw new ManifestError(`manifest: ${what}`);
};

/** Check a version 4 manifest's condition and decode sections (docs/manifest-v4.md) against its graphs. */
function checkPipeline(m, graphs) {
  const c = m.condition;
  const denoise = m.sampling.kind === "one_step" ? [m.sampling.graph] : m.sampling.graph_per_step;
  if (c !== null && c !== undefined) {
    need(["class", "text"].includes(c.kind), `condition.kind ${JSON.stringify(c.kind)}: this app reads class and text`);
    for (const g of new Set(denoise)) {
      need(graphs[g].inputs.some((i) => i.name === c.input), `condition.input ${JSON.stringify(c.input)} is not an input of graph ${g}`);
    }
    if (c.kind === "class") {
      need(Number.isInteger(c.num_classes) && c.num_classes > 0, "condition.num_classes must be a positive integer");
      need(c.names == null || (Array.isArray(c.names) && c.names.length === c.num_classes),
        `condition.names must list ${c.num_classes} names (one per class id)`);
    } else {
      need(graphs[c.encoder_graph], `condition.encoder_graph ${JSON.stringify(c.encoder_graph)} is not in models`);
      const t = c.tokenizer || {};
      need(t.kind === "clip_bpe", `condition.tokenizer.kind ${JSON.stringify(t.kind)}: this app implements clip_bpe`);
      for (const f of ["vocab", "merges"]) {
        need(typeof t.files?.[f] === "string" && !t.files[f].includes(".."), `condition.tokenizer.files.${f} missing`);
      }
    }
  }
  if (m.sampling.kind === "ddim" && (m.sampling.guidance_scale ?? 1) > 1) {
    need(false, `sampling.guidance_scale ${m.sampling.guidance_scale}: this app runs guided DDIM loops not yet (no edgekd export writes one)`);
  }
  if (m.decode !== null && m.decode !== undefined) {
    need(graphs[m.decode.graph], `decode.graph ${JSON.stringify(m.decode.graph)} is not in models`);
    need(m.decode.applied_in_graph !== false, "decode.applied_in_graph false: this app feeds the decoder the latents unchanged");
  }
}

/** Check the fields this app relies on (docs/manifest-v3.md, v4.md); a wrong file fails here, not deep in a runtime. */
export function checkManifest(m) {
  need(m && typeof m === "object", "not a JSON object");
  need([3, 4].includes(m.format_version), `format_version ${JSON.stringify(m.format_version)}; this app reads versions 3 and 4 (re-export with this edgekd)`);
  need(["onnx", "tflite"].includes(m.target), `target ${JSON.stringify(m.target)}: the web app runs onnx and tflite`);
  need(Array.isArray(m.models) && m.models.length > 0, "models must list at least one graph");
  const graphs = Object.fromEntries(m.models.map((g) => [g.name, g]));
  const names = new Set(Object.keys(graphs));
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
  if (m.format_version === 4) checkPipeline(m, graphs);
  return m;
}

const concrete = (shape) => shape.map((d) => (typeof d === "number" ? d : 1));

/** The condition feed a denoise graph gets: a class id, or the text encoder's output. */
export function classFeed(m, graph, classId) {
  const c = m.condition;
  const id = Number(classId);
  if (!Number.isInteger(id) || id < 0 || id >= c.num_classes) {
    throw new ManifestError(`class ${JSON.stringify(classId)} is out of range 0..${c.num_classes - 1}`);
  }
  const spec = graph.inputs.find((i) => i.name === c.input);
  return {name: c.input, dtype: spec.dtype, shape: concrete(spec.shape), data: [id]};
}

/**
 * The denoiser's condition input for `condition` (a class id, or token ids for a text model: the text-encoder
 * graph runs here, once per image; its output is the same for every DDIM step). null for an unconditional model.
 */
export async function conditionFeed(m, condition, runGraph) {
  const c = m.condition;
  if (!c) return null;
  const graphs = Object.fromEntries(m.models.map((g) => [g.name, g]));
  const first = graphs[m.sampling.kind === "one_step" ? m.sampling.graph : m.sampling.graph_per_step[0]];
  if (condition === null || condition === undefined) throw new ManifestError(`this model is ${c.kind}-conditional: pick a ${c.kind === "class" ? "class" : "prompt"}`);
  if (c.kind === "class") return classFeed(m, first, condition);
  const enc = graphs[c.encoder_graph];
  const [ids] = enc.inputs;
  const tokens = Array.from(condition);
  const shape = concrete(ids.shape);
  need(tokens.length === shape[shape.length - 1], `${tokens.length} token ids for ${enc.name}'s input of ${shape[shape.length - 1]}`);
  const hidden = await runGraph(enc, [{name: ids.name, dtype: ids.dtype, shape, data: tokens}]);
  const spec = first.inputs.find((i) => i.name === c.input);
  return {name: c.input, dtype: "float32", shape: concrete(spec.shape), data: hidden};
}

/** The graph's inputs by role: the condition input by its name; of the others, the first is the sample/noise and
 * a second one the timestep. */
function inputsFor(graph, x, timestep, cond = null) {
  const [sample, t] = graph.inputs.filter((i) => i.name !== cond?.name);
  const feeds = [{name: sample.name, dtype: "float32", shape: concrete(sample.shape), data: x}];
  if (t) feeds.push({name: t.name, dtype: t.dtype, shape: concrete(t.shape), data: [timestep]});
  if (cond) feeds.push(cond);
  return feeds;
}

/**
 * Run the manifest's pipeline from `noise` (Float32Array of noise.shape): the condition stage for `condition` (a
 * class id, or token ids; ignored by an unconditional model), the sampling section, the decode stage.
 * `runGraph(graph, feeds)` returns the graph's output as a Float32Array. `onStep(i, n)` reports progress. Returns
 * the image (Float32Array of image.shape).
 */
export async function sample(m, noise, runGraph, onStep = () => {}, condition = null) {
  const graphs = Object.fromEntries(m.models.map((g) => [g.name, g]));
  const cond = await conditionFeed(m, condition, runGraph);
  const x = await denoise(m, graphs, noise, runGraph, onStep, cond);
  if (!m.decode) return x;
  const dec = graphs[m.decode.graph];
  const input = dec.inputs.find((i) => i.name === m.decode.input) ?? dec.inputs[0];
  return runGraph(dec, [{name: input.name, dtype: "float32", shape: concrete(input.shape), data: x}]);
}

async function denoise(m, graphs, noise, runGraph, onStep, cond) {
  const s = m.sampling;
  if (s.kind === "one_step") {
    const g = graphs[s.graph];
    const out = await runGraph(g, inputsFor(g, noise, 0, cond));
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
    const eps = await runGraph(g, inputsFor(g, x, s.timesteps[i], cond));
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
  // image.shape (v4: a latent model's picture is not the noise's shape); v3 manifests may lack it
  const [c, h, w] = m.image?.shape ?? m.noise.shape;
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
