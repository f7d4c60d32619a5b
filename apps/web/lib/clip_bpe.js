// The "clip_bpe" tokenizer of manifest v4 (docs/manifest-v4.md, "The clip_bpe tokenizer"): prompt -> input_ids for
// the text-encoder graph, from the vocab.json + merges.txt an export ships. The reference is transformers'
// CLIPTokenizer on the same files (edgekd/runtime/open.py exported_tokenizer); tests/test_web_v4.py checks this
// module against it, id for id. Pure functions over the two files' text: the page fetches them, Node reads them.
//
// Where the contract's one-line rules leave a choice, this follows what the reference really does:
// - the special tokens' exact text (e.g. "<|endoftext|>") in a prompt is that token's id, matched before
//   normalisation and case-sensitively (transformers' added tokens); "<|ENDOFTEXT|>" is ordinary text;
// - normalisation is NFC, then every run of Unicode White_Space (Oniguruma's \s: includes U+0085, excludes U+FEFF,
//   unlike JavaScript's \s) becomes one space, then lowercasing code point by code point (Rust's char lowercase:
//   no final-sigma rule, which String.prototype.toLowerCase applies to whole strings);
// - a symbol missing from the vocabulary is the unknown token, which the exported tokenizer sets to eos.

// Unicode White_Space as Oniguruma's \s sees it: U+0009-U+000D, U+0085 and the Zs/Zl/Zp code points
const WS = "\\t\\n\\v\\f\\r\\u0085\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS}]+`, "gu");
const PIECE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`, "giu");
// ...and each piece again by GPT-2's pattern (the reference's ByteLevel pre-tokenizer, use_regex on; pieces hold no
// whitespace, so its space alternatives are dropped): it only splits pieces such as "<|endoftext|>" (typed in a
// different case, so not the special token) into "<|", "endoftext", "|>", and, case-sensitively, "'S" into "'", "S".
const GPT2_PIECE = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}+|[^${WS}\\p{L}\\p{N}]+`, "gu");

/** GPT-2's byte-to-unicode table: printable bytes map to themselves, the other 68 to U+0100 upwards, in order. */
export function byteToUnicode() {
  const keep = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const table = new Array(256);
  for (const b of keep) table[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCodePoint(256 + n++);
  return table;
}

export class TokenizerError extends Error {}

export class ClipBpeTokenizer {
  /**
   * `vocab`: the parsed vocab.json ({symbol: id}); `mergesText`: merges.txt as text; `spec`: the manifest's
   * condition.tokenizer (max_length, bos/eos/pad ids, lowercase).
   */
  constructor(vocab, mergesText, spec) {
    if (spec?.kind !== undefined && spec.kind !== "clip_bpe") throw new TokenizerError(`tokenizer kind ${JSON.stringify(spec.kind)}: this app implements clip_bpe`);
    for (const key of ["max_length", "bos_token_id", "eos_token_id", "pad_token_id"]) {
      if (!Number.isInteger(spec?.[key])) throw new TokenizerError(`tokenizer.${key} must be an integer`);
    }
    if (spec.max_length < 2) throw new TokenizerError(`tokenizer.max_length ${spec.max_length}: needs room for bos and eos`);
    this.vocab = new Map(Object.entries(vocab));
    this.spec = spec;
    this.lowercase = spec.lowercase !== false;
    this.ranks = new Map();
    // rank k = the k-th merge line after the "#version" header (blank lines are not merges)
    for (const line of mergesText.split(/\r?\n/)) {
      if (!line || line.startsWith("#version")) continue;
      const pair = line.split(" ");
      if (pair.length !== 2) throw new TokenizerError(`merges.txt: line ${JSON.stringify(line)} is not "a b"`);
      if (!this.ranks.has(line)) this.ranks.set(line, this.ranks.size);
    }
    const byId = new Map([...this.vocab].map(([s, id]) => [id, s]));
    // the special tokens, matched as whole strings in the raw prompt (longest first)
    this.special = [...new Set([spec.bos_token_id, spec.eos_token_id, spec.pad_token_id])]
      .filter((id) => byId.has(id)).map((id) => [byId.get(id), id]).sort((a, b) => b[0].length - a[0].length);
    this.bytes = byteToUnicode();
    this.cache = new Map();
  }

  /** From the two files' text (what the page fetches and a Node test reads). */
  static fromText(vocabText, mergesText, spec) {
    let vocab;
    try {
      vocab = JSON.parse(vocabText);
    } catch (err) {
      throw new TokenizerError(`vocab.json is not JSON (${err.message})`);
    }
    return new ClipBpeTokenizer(vocab, mergesText, spec);
  }

  normalize(text) {
    let t = text.normalize("NFC").replace(WS_RUN, " ");
    if (this.lowercase) t = Array.from(t, (c) => c.toLowerCase()).join("");
    return t;
  }

  /** BPE on one piece (byte-level characters): merge the lowest-ranked adjacent pair until none is in merges. */
  bpe(piece) {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    const chars = Array.from(piece);
    let word = [...chars.slice(0, -1), chars[chars.length - 1] + "</w>"];
    while (word.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
      }
      if (best < 0) break;
      const [a, b] = [word[best], word[best + 1]];
      const next = [];
      for (let i = 0; i < word.length; i++) {
        if (i < word.length - 1 && word[i] === a && word[i + 1] === b) { next.push(a + b); i++; } else next.push(word[i]);
      }
      word = next;
    }
    const ids = word.map((s) => this.vocab.get(s) ?? this.spec.eos_token_id);
    this.cache.set(piece, ids);
    return ids;
  }

  /** The token ids of `text` without bos/eos/padding. */
  ids(text) {
    const out = [];
    const encoder = new TextEncoder();
    const plain = (segment) => {
      for (const coarse of this.normalize(segment).match(PIECE) ?? []) {
        for (const piece of coarse.match(GPT2_PIECE)) {
          out.push(...this.bpe(Array.from(encoder.encode(piece), (b) => this.bytes[b]).join("")));
        }
      }
    };
    let rest = text;
    while (rest.length) {
      let at = -1, tok = null;
      for (const [s, id] of this.special) {
        const i = rest.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) { at = i; tok = [s, id]; }
      }
      if (at < 0) { plain(rest); break; }
      plain(rest.slice(0, at));
      out.push(tok[1]);
      rest = rest.slice(at + tok[0].length);
    }
    return out;
  }

  /** input_ids = [bos] + ids[: max_length - 2] + [eos], padded with pad to max_length. */
  encode(text) {
    const {max_length: n, bos_token_id: bos, eos_token_id: eos, pad_token_id: pad} = this.spec;
    const ids = [bos, ...this.ids(text).slice(0, n - 2), eos];
    while (ids.length < n) ids.push(pad);
    return ids;
  }
}
