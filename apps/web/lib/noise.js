// Portable seeded noise "mulberry32-boxmuller-v1" (docs/manifest-v3.md; reference: edgekd/portable_noise.py).
// Torch's generator cannot be reproduced in a browser, so apps turn a seed into noise with this small generator;
// apps/golden/portable-noise.json holds the values every implementation must reproduce.

export const NOISE_NAME = "mulberry32-boxmuller-v1";

/** A mulberry32 stream; all arithmetic wraps at 2^32 (>>> 0 keeps values unsigned). */
export function mulberry32(seed) {
  let state = seed >>> 0;
  return function nextUint32() {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1) >>> 0;
    t = (t ^ ((t + Math.imul(t ^ (t >>> 7), t | 61)) >>> 0)) >>> 0;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** `count` standard normals (Float32Array) from `seed`: Box-Muller in float64, z0 then z1 per pair. */
export function portableNormals(seed, count) {
  const next = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const u1 = 1 - next() / 4294967296;
    const u2 = next() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** The noise of image `index` of `seed` (image i uses seed s + i), for a per-image shape [C, H, W]. */
export function portableNoise(seed, shape, index = 0) {
  const size = shape.reduce((a, b) => a * b, 1);
  return portableNormals((seed + index) >>> 0, size);
}
