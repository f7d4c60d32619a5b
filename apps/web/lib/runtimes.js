// The two in-browser runtimes behind one interface: load every graph a manifest lists (verifying its sha256),
// then run(graph, feeds) -> Float32Array. Both come from npm packages served by the same origin (no CDN): their
// wasm files are fetched from ./node_modules/, so they work offline and under COOP/COEP.

const ORT_DIST = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;
const LITERT_WASM = new URL("../node_modules/@litertjs/core/wasm/", import.meta.url).href;

/** Threads need SharedArrayBuffer, which a page only gets when cross-origin isolated (COOP + COEP headers). */
export function threadCount() {
  return self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
}

async function packageVersion(dir) {
  const res = await fetch(new URL("../package.json", dir));
  return res.ok ? (await res.json()).version : "unknown";
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fetch a model file and check it is the one the manifest describes (a stale or partial copy fails here). */
export async function fetchModel(baseUrl, graph) {
  const url = new URL(graph.file, baseUrl);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`model file ${url} -> HTTP ${res.status}`);
  const bytes = await res.arrayBuffer();
  if (graph.sha256) {
    const got = await sha256Hex(bytes);
    if (got !== graph.sha256) throw new Error(`${graph.file}: sha256 ${got.slice(0, 12)}... differs from the manifest's ${graph.sha256.slice(0, 12)}... (re-copy the export)`);
  }
  return new Uint8Array(bytes);
}

/** The backends a page can ask for: wasm (the default, CPU, what every test and the benchmark numbers use) and,
 * for ONNX models where the browser has WebGPU, onnxruntime-web's WebGPU execution provider. */
export const BACKENDS = ["wasm", "webgpu"];

/**
 * Whether WebGPU can run here: `navigator.gpu` is only the API; a browser without a usable GPU (headless, blocked
 * driver, --disable-gpu) still has it but gives no adapter. Returns null when usable, else why not (one line).
 */
export async function webgpuUnavailable(gpu = globalThis.navigator?.gpu) {
  if (!gpu) return "this browser has no WebGPU (navigator.gpu)";
  try {
    return (await gpu.requestAdapter()) ? null : "WebGPU gives no GPU adapter here";
  } catch (err) {
    return `WebGPU adapter request failed (${err.message || err})`;
  }
}

class OrtRuntime {
  /**
   * `backend` "webgpu" is a request, not a promise: without WebGPU, or when a session fails to build on it, the
   * models load on wasm and `fallback` says why (the page shows it); `info.backend` is always what really runs.
   */
  static async create(manifest, baseUrl, backend = "wasm") {
    if (backend === "webgpu") {
      let why = await webgpuUnavailable();
      if (why === null) {
        try {
          return await OrtRuntime.load(manifest, baseUrl, "webgpu");
        } catch (err) {
          // onnxruntime-web's wasm side can throw a bare number (a C++ exception pointer): name the source
          why = `WebGPU session failed (${err?.message || `onnxruntime-web threw ${String(err)}`})`;
        }
      }
      const runtime = await OrtRuntime.load(manifest, baseUrl, "wasm");
      runtime.fallback = `${why}: running on wasm`;
      return runtime;
    }
    return OrtRuntime.load(manifest, baseUrl, "wasm");
  }

  static async load(manifest, baseUrl, backend) {
    // two builds of the same package: the wasm-only one (ort-wasm-simd-threaded.{mjs,wasm}) stays the default,
    // the WebGPU one (its own .asyncify.{mjs,wasm}) is fetched only when asked for
    const ort = backend === "webgpu" ? await import("onnxruntime-web/webgpu") : await import("onnxruntime-web");
    ort.env.wasm.wasmPaths = ORT_DIST;
    ort.env.wasm.numThreads = threadCount();
    const sessions = {};
    try {
      for (const g of manifest.models) {
        sessions[g.name] = await ort.InferenceSession.create(await fetchModel(baseUrl, g), {executionProviders: [backend]});
      }
    } catch (err) {
      for (const s of Object.values(sessions)) await s.release?.();
      throw err;
    }
    const version = ort.env.versions?.web ?? (await packageVersion(ORT_DIST));
    return new OrtRuntime(ort, sessions, {name: "onnxruntime-web", version, backend, threads: ort.env.wasm.numThreads});
  }

  constructor(ort, sessions, info) {
    this.ort = ort;
    this.sessions = sessions;
    this.info = info;
    this.fallback = null;
  }

  async run(graph, feeds) {
    const inputs = {};
    for (const f of feeds) {
      const data = f.dtype === "int64" ? BigInt64Array.from(f.data, (v) => BigInt(Math.round(v)))
        : f.dtype === "int32" ? Int32Array.from(f.data) : Float32Array.from(f.data);
      inputs[f.name] = new this.ort.Tensor(f.dtype, data, f.shape);
    }
    const out = await this.sessions[graph.name].run(inputs);
    const t = out[graph.output.name];
    if (!t) throw new Error(`${graph.file}: no output named ${graph.output.name} (has ${Object.keys(out).join(", ")})`);
    const data = Float32Array.from(t.data);
    for (const v of Object.values(out)) v.dispose?.();
    return data;
  }
}

class LiteRtRuntime {
  static async create(manifest, baseUrl) {
    const litert = await import("@litertjs/core");
    const threads = threadCount();
    // loadLiteRt may run once per page: later models reuse the loaded wasm module
    if (!litert.getGlobalLiteRtPromise()) await litert.loadLiteRt(LITERT_WASM, {threads: threads > 1});
    await litert.getGlobalLiteRtPromise();
    const models = {};
    for (const g of manifest.models) {
      models[g.name] = await litert.loadAndCompile(await fetchModel(baseUrl, g),
        {accelerator: "wasm", cpuOptions: {numThreads: threads}});
    }
    const version = await packageVersion(LITERT_WASM);
    return new LiteRtRuntime(litert, models, {name: "litert.js", version, backend: "wasm", threads});
  }

  constructor(litert, models, info) {
    this.litert = litert;
    this.models = models;
    this.info = info;
    this.fallback = null;
  }

  async run(graph, feeds) {
    const model = this.models[graph.name];
    const inputs = {};
    for (const f of feeds) {
      if (f.dtype === "int64") throw new Error(`${graph.file}: LiteRT.js has no int64 tensors (input ${f.name})`);
      const data = f.dtype === "int32" ? Int32Array.from(f.data) : Float32Array.from(f.data);
      inputs[f.name] = new this.litert.Tensor(data, f.shape);
    }
    const out = await model.run(inputs);
    for (const t of Object.values(inputs)) t.delete();
    const t = out[graph.output.name] ?? Object.values(out)[0];
    const data = Float32Array.from(t.toTypedArray());
    for (const v of Object.values(out)) v.delete();
    return data;
  }
}

/**
 * The runtime for the manifest's target: onnx -> onnxruntime-web (on `backend`, falling back to wasm), tflite ->
 * LiteRT.js (wasm only here). `runtime.info.backend` is what runs; `runtime.fallback` says why it is not the one
 * asked for (null when it is).
 */
export async function createRuntime(manifest, baseUrl, backend = "wasm") {
  if (!BACKENDS.includes(backend)) throw new Error(`backend ${JSON.stringify(backend)}: choose ${BACKENDS.join(" or ")}`);
  if (manifest.target === "onnx") return OrtRuntime.create(manifest, baseUrl, backend);
  if (manifest.target === "tflite") {
    const runtime = await LiteRtRuntime.create(manifest, baseUrl);
    if (backend !== "wasm") runtime.fallback = "WebGPU is offered for ONNX models only: running on wasm";
    return runtime;
  }
  throw new Error(`target ${manifest.target} cannot run in a browser`);
}
