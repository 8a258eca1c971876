/**
 * CLIP BPE tokenizer, matching transformers' slow `CLIPTokenizer` (the one diffusers' SD/SDXL pipelines use)
 * when ftfy is installed. Reference: test/fixtures/tokenizer/README.md and its 42 golden cases.
 *
 * Pipeline for one prompt, in HF's order:
 *   1. split the raw text on added tokens (`<|startoftext|>`, `<|endoftext|>`, the pad token and any other
 *      `added_tokens_decoder` entry): each becomes its own id and is never cleaned or BPE'd. Because SDXL's
 *      tokenizer_2 registers `"!"` as its pad token, every `!` of a tokenizer_2 prompt becomes id 0.
 *   2. each remaining segment: ftfy.fix_text (the subset below), `\s+` -> " ", strip, lower-case;
 *   3. pre-tokenise with CLIP's regex (contractions, letter runs, single digits, other-symbol runs);
 *   4. UTF-8 bytes -> byte-level unicode symbols, `</w>` on the last one, BPE by merge rank.
 *
 * ftfy 6.3 `fix_text` subset implemented here (default config, applied line by line and repeated until the
 * text stops changing, as ftfy does):
 *   - unescape_html: `&name;` / `&#NNN;` / `&#xHH;` entities, only until the first line that contains `<`.
 *     Named entities: the 252 HTML 4 names + `&apos;` (HTML5 values) and their all-caps spellings (`&EACUTE;`).
 *     Not implemented: the ~1,900 HTML5-only names (`&NewLine;`, `&lpar;`...); those stay as typed.
 *   - fix_encoding: UTF-8 that was decoded as Latin-1 / Windows-1252 (`cafÃ©`, `â€œ`, `ðŸ˜€`), either the whole
 *     line re-encoded at once or, when the line mixes good and broken text, each broken run on its own.
 *     ftfy's statistical "is it bad?" test is replaced by our own rule (`sequenceIsMojibake`). Not implemented:
 *     other single-byte code pages (cp1251, cp1250, MacRoman, cp437...), restore_byte_a0,
 *     replace_lossy_sequences, CESU-8 / Java "utf-8-variants".
 *   - fix_c1_controls (U+0080..U+009F read as Windows-1252), fix_latin_ligatures (ﬁ -> fi, Ĳ -> IJ, ...),
 *     fix_character_width (full-width / half-width forms U+FF01..U+FFEF folded with NFKC, U+3000 -> space),
 *     uncurl_quotes (U+02BC, U+2018..U+201B -> ', U+201C..U+201F -> "), fix_line_breaks, fix_surrogates,
 *     remove_terminal_escapes (ANSI CSI), remove_control_chars (C0 controls except \t \n \f \r, DEL,
 *     U+206A..U+206F, U+FEFF, U+FFF9..U+FFFC; zero-width spaces/joiners are kept, as ftfy keeps them),
 *     NFC normalisation.
 */
import * as fs from 'fs';
import * as path from 'path';

export interface CLIPTokenizerOptions {
  /** id used to pad rows to maxLength; defaults to the id of `padToken`, else `<|endoftext|>` (49407). */
  padTokenId?: number;
  /** pad token string (SDXL tokenizer_2: "!"); registered as a special token, so it is split out of prompts. */
  padToken?: string;
  /** row length of call()/callBatch(), BOS and EOS included (77). */
  maxLength?: number;
  /** further added tokens (content -> id), split out of the raw text like the special tokens. */
  addedTokens?: Record<string, number>;
}

const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';
/** transformers keeps merges 1 .. 49152-256-2 of merges.txt (line 0 is the "#version" header). */
const MAX_MERGES = 49152 - 256 - 2;
const DEFAULT_MAX_LENGTH = 77;
const BPE_CACHE_LIMIT = 100_000;
/** longer words are not cached: they are rarely repeated, and one can hold megabytes of symbols. */
const BPE_CACHE_MAX_WORD = 1_000;

// ---------------------------------------------------------------------------------------------------------------
// Character tables
// ---------------------------------------------------------------------------------------------------------------

/** Python's `str.isspace()` set, which is what `re` `\s` and `str.strip()` use in whitespace_clean. */
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, 'gu');
const EDGE_SPACE = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'gu');
/** `regex` module `\s` (Unicode White_Space) for the pre-tokeniser; after cleaning only " " is left anyway. */
const RX_SPACE = '\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/**
 * CLIP's pre-tokeniser (compiled with re.IGNORECASE in transformers). One quirk of Python's `regex` module:
 * under IGNORECASE, U+0345 COMBINING GREEK YPOGEGRAMMENI (which case-folds to a letter) matches none of the
 * alternatives and is skipped like a space, while JS counts it as a letter; `preTokenize` blanks it first.
 */
const PRETOKENIZE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${RX_SPACE}\\p{L}\\p{N}]+`,
  'giu',
);

function preTokenize(clean: string): string[] {
  return clean.replace(/\u0345/g, ' ').match(PRETOKENIZE) ?? [];
}

/**
 * GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the other 68 bytes (controls, space,
 * DEL, NBSP, soft hyphen) to U+0100.. in byte order, so every byte is one visible, non-space symbol.
 */
const BYTE_SYMBOL: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : next++));
  return table;
})();

/** Windows-1252 bytes 0x80..0x9F; the five bytes it leaves undefined keep their C1 code point ("sloppy"). */
const CP1252_HIGH = [
  0x20ac, 0x81, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8d,
  0x017d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a,
  0x0153, 0x9d, 0x017e, 0x0178,
];
/** code point -> byte for the union of Latin-1 and sloppy Windows-1252 (used to undo mojibake). */
const SINGLE_BYTE = (() => {
  const m = new Map<number, number>();
  for (let b = 0; b < 256; b++) m.set(b, b);
  CP1252_HIGH.forEach((cp, i) => m.set(cp, 0x80 + i));
  return m;
})();

const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'gu');

/** ftfy's width map: U+3000 and every char in U+FF01..U+FFEF whose NFKC form differs from itself. */
const WIDTH_MAP = (() => {
  const m = new Map<string, string>([['\u3000', ' ']]);
  for (let cp = 0xff01; cp < 0xfff0; cp++) {
    const c = String.fromCharCode(cp);
    const folded = c.normalize('NFKC');
    if (folded !== c) m.set(c, folded);
  }
  return m;
})();
const WIDTH_RE = /[\u3000\uff01-\uffef]/gu;

/** HTML 4 entity names + apos, with their HTML5 values (as ftfy's table, built from html.entities.html5). */
const HTML_ENTITY_DATA =
  'AElig:c6 Aacute:c1 Acirc:c2 Agrave:c0 Alpha:391 Aring:c5 Atilde:c3 Auml:c4 Beta:392 Ccedil:c7 Chi:3a7 ' +
  'Dagger:2021 Delta:394 ETH:d0 Eacute:c9 Ecirc:ca Egrave:c8 Epsilon:395 Eta:397 Euml:cb Gamma:393 Iacute:cd ' +
  'Icirc:ce Igrave:cc Iota:399 Iuml:cf Kappa:39a Lambda:39b Mu:39c Ntilde:d1 Nu:39d OElig:152 Oacute:d3 ' +
  'Ocirc:d4 Ograve:d2 Omega:3a9 Omicron:39f Oslash:d8 Otilde:d5 Ouml:d6 Phi:3a6 Pi:3a0 Prime:2033 Psi:3a8 ' +
  'Rho:3a1 Scaron:160 Sigma:3a3 THORN:de Tau:3a4 Theta:398 Uacute:da Ucirc:db Ugrave:d9 Upsilon:3a5 Uuml:dc ' +
  'Xi:39e Yacute:dd Yuml:178 Zeta:396 aacute:e1 acirc:e2 acute:b4 aelig:e6 agrave:e0 alefsym:2135 alpha:3b1 ' +
  'amp:26 and:2227 ang:2220 apos:27 aring:e5 asymp:2248 atilde:e3 auml:e4 bdquo:201e beta:3b2 brvbar:a6 ' +
  'bull:2022 cap:2229 ccedil:e7 cedil:b8 cent:a2 chi:3c7 circ:2c6 clubs:2663 cong:2245 copy:a9 crarr:21b5 ' +
  'cup:222a curren:a4 dArr:21d3 dagger:2020 darr:2193 deg:b0 delta:3b4 diams:2666 divide:f7 eacute:e9 ' +
  'ecirc:ea egrave:e8 empty:2205 emsp:2003 ensp:2002 epsilon:3b5 equiv:2261 eta:3b7 eth:f0 euml:eb euro:20ac ' +
  'exist:2203 fnof:192 forall:2200 frac12:bd frac14:bc frac34:be frasl:2044 gamma:3b3 ge:2265 gt:3e ' +
  'hArr:21d4 harr:2194 hearts:2665 hellip:2026 iacute:ed icirc:ee iexcl:a1 igrave:ec image:2111 infin:221e ' +
  'int:222b iota:3b9 iquest:bf isin:2208 iuml:ef kappa:3ba lArr:21d0 lambda:3bb lang:27e8 laquo:ab ' +
  'larr:2190 lceil:2308 ldquo:201c le:2264 lfloor:230a lowast:2217 loz:25ca lrm:200e lsaquo:2039 lsquo:2018 ' +
  'lt:3c macr:af mdash:2014 micro:b5 middot:b7 minus:2212 mu:3bc nabla:2207 nbsp:a0 ndash:2013 ne:2260 ' +
  'ni:220b not:ac notin:2209 nsub:2284 ntilde:f1 nu:3bd oacute:f3 ocirc:f4 oelig:153 ograve:f2 oline:203e ' +
  'omega:3c9 omicron:3bf oplus:2295 or:2228 ordf:aa ordm:ba oslash:f8 otilde:f5 otimes:2297 ouml:f6 para:b6 ' +
  'part:2202 permil:2030 perp:22a5 phi:3c6 pi:3c0 piv:3d6 plusmn:b1 pound:a3 prime:2032 prod:220f prop:221d ' +
  'psi:3c8 quot:22 rArr:21d2 radic:221a rang:27e9 raquo:bb rarr:2192 rceil:2309 rdquo:201d real:211c reg:ae ' +
  'rfloor:230b rho:3c1 rlm:200f rsaquo:203a rsquo:2019 sbquo:201a scaron:161 sdot:22c5 sect:a7 shy:ad ' +
  'sigma:3c3 sigmaf:3c2 sim:223c spades:2660 sub:2282 sube:2286 sum:2211 sup:2283 sup1:b9 sup2:b2 sup3:b3 ' +
  'supe:2287 szlig:df tau:3c4 there4:2234 theta:3b8 thetasym:3d1 thinsp:2009 thorn:fe tilde:2dc times:d7 ' +
  'trade:2122 uArr:21d1 uacute:fa uarr:2191 ucirc:fb ugrave:f9 uml:a8 upsih:3d2 upsilon:3c5 uuml:fc ' +
  'weierp:2118 xi:3be yacute:fd yen:a5 yuml:ff zeta:3b6 zwj:200d zwnj:200c ' +
  // HTML5 names that are the all-caps spelling of one above: they keep their own value and stop the
  // upper-casing rule below from adding them.
  'AMP:26 COPY:a9 GT:3e LT:3c QUOT:22 REG:ae TRADE:2122';

const HTML_ENTITIES = (() => {
  const m = new Map<string, string>();
  for (const item of HTML_ENTITY_DATA.split(' ')) {
    const [name, hex] = item.split(':');
    m.set(`&${name};`, String.fromCodePoint(parseInt(hex, 16)));
  }
  // ftfy also decodes an all-lower-case entity typed in capitals, when that spelling is not an entity itself.
  for (const [key, value] of [...m]) {
    const upper = key.toUpperCase();
    if (key === key.toLowerCase() && !m.has(upper)) m.set(upper, value.toUpperCase());
  }
  return m;
})();
const HTML_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

/** Code points Python's html.unescape drops from numeric references (noncharacters, most controls). */
function isDroppedCharRef(n: number): boolean {
  return (n >= 0x1 && n <= 0x8) || n === 0xb || (n >= 0xe && n <= 0x1f) || (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) || (n & 0xfffe) === 0xfffe;
}

/** `&#NNN;` / `&#xHH;` as Python's html.unescape decodes it, or null when ftfy would leave it alone. */
function numericCharRef(entity: string): string | null {
  const body = entity.slice(2, -1);
  let n: number;
  if (/^[0-9]+$/.test(body)) n = parseInt(body, 10);
  else if (/^[xX][0-9a-fA-F]+$/.test(body)) n = parseInt(body.slice(1), 16);
  else return null;
  let out: string;
  if (n === 0) out = '\ufffd';
  else if (n === 0x0d) out = '\r';
  else if (n >= 0x80 && n <= 0x9f) out = String.fromCharCode(CP1252_HIGH[n - 0x80]);
  else if ((n >= 0xd800 && n <= 0xdfff) || n > 0x10ffff) out = '\ufffd';
  else if (isDroppedCharRef(n)) out = '';
  else out = String.fromCodePoint(n);
  // ftfy keeps the reference when the decoded text still holds a ';' (i.e. `&#59;`).
  return out.includes(';') ? null : out;
}

function unescapeHtml(text: string): string {
  return text.replace(HTML_ENTITY_RE, (entity) => {
    const named = HTML_ENTITIES.get(entity);
    if (named !== undefined) return named;
    if (entity.startsWith('&#')) return numericCharRef(entity) ?? entity;
    return entity;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Mojibake: UTF-8 bytes that were decoded as Latin-1 / Windows-1252
// ---------------------------------------------------------------------------------------------------------------

/** Characters that Latin-1 or Windows-1252 produce for a UTF-8 continuation byte (0x80..0xBF). */
const CONT = '\\u0080-\\u00bf\\u0152\\u0153\\u0160\\u0161\\u0178\\u017d\\u017e\\u0192\\u02c6\\u02dc' +
  '\\u2013\\u2014\\u2018-\\u201a\\u201c-\\u201e\\u2020-\\u2022\\u2026\\u2030\\u2039\\u203a\\u20ac\\u2122';
/** One UTF-8 sequence as Windows-1252 shows it: lead byte (Â..ß, à..ï, ð..ô) + its continuation bytes. */
const SEQ = `[\\u00c2-\\u00df][${CONT}]|[\\u00e0-\\u00ef][${CONT}]{2}|[\\u00f0-\\u00f4][${CONT}]{3}`;
const MOJIBAKE_RUN = new RegExp(`(?:${SEQ})+`, 'gu');
const SEQ_RE = new RegExp(SEQ, 'gu');
/**
 * Our stand-in for ftfy's badness test. A lead+continuation sequence counts as mojibake when its lead is Â or Ã
 * (which real text never puts before a symbol) or one of its continuations is a character that real text
 * hardly ever puts right after a letter: C1 controls and the rarer Latin-1 / Windows-1252 symbols. Sequences
 * made only of common followers (… ’ ” “ ‘ – — • ® © ° « » ¹ ² ³ · NBSP) are left alone, so "STRAßE…" or
 * "JOSÉ’S" are not "repaired" into Cyrillic or NKo.
 */
const COMMON_FOLLOWER = new Set('\u00a0\u00a9\u00ab\u00ae\u00b0\u00b2\u00b3\u00b7\u00b9\u00bb\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026');

function sequenceIsMojibake(seq: string): boolean {
  if (seq[0] === '\u00c2' || seq[0] === '\u00c3') return true;
  for (let i = 1; i < seq.length; i++) if (!COMMON_FOLLOWER.has(seq[i])) return true;
  return false;
}

function hasMojibake(text: string): boolean {
  for (const m of text.matchAll(SEQ_RE)) if (sequenceIsMojibake(m[0])) return true;
  return false;
}

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Re-encode with Latin-1/Windows-1252 and decode as UTF-8; null when not encodable or not valid UTF-8. */
function redecodeUtf8(text: string): string | null {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const b = SINGLE_BYTE.get(text.charCodeAt(i));
    if (b === undefined) return null;
    bytes[i] = b;
  }
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    return null;
  }
}

function fixEncodingStep(text: string): string {
  if (!hasMojibake(text)) return text;
  const whole = redecodeUtf8(text);
  if (whole !== null) return whole;
  // Good text and broken text in one line: fix each broken run on its own (ftfy's decode_inconsistent_utf8).
  return text.replace(MOJIBAKE_RUN, (run) => (hasMojibake(run) ? redecodeUtf8(run) ?? run : run));
}

function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixEncodingStep(text);
    if (fixed === text) return text;
    text = fixed;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The other ftfy fixes, and fix_text itself
// ---------------------------------------------------------------------------------------------------------------

const C1_RE = /[\u0080-\u009f]/g;
const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;
const LONE_SURROGATE_RE = /[\ud800-\udfff]/gu;
const ANSI_ESCAPE_RE = /\u001b\[[\p{Nd};]*[a-zA-Z]/gu;
const CONTROL_RE = /[\u0000-\u0008\u000b\u000e-\u001f\u007f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;
const MAX_DECODE_LENGTH = 1_000_000;

function fixSegment(text: string, unescape: boolean): string {
  for (;;) {
    const before = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = text.replace(C1_RE, (c) => String.fromCharCode(CP1252_HIGH[c.charCodeAt(0) - 0x80]));
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
    text = text.replace(WIDTH_RE, (c) => WIDTH_MAP.get(c) ?? c);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = text.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
    text = text.replace(LONE_SURROGATE_RE, '\ufffd');
    text = text.replace(ANSI_ESCAPE_RE, '');
    text = text.replace(CONTROL_RE, '');
    text = text.normalize('NFC');
    if (text === before) return text;
  }
}

/**
 * ftfy.fix_text with its default settings, restricted to the fixes listed in the header. Works line by line
 * (each line keeps its "\n"); HTML entities are decoded until the first line that contains "<".
 */
export function fixText(text: string): string {
  requireString(text, 'fixText: text');
  let out = '';
  let unescape = true;
  for (let pos = 0; pos < text.length;) {
    let end = text.indexOf('\n', pos) + 1;
    if (end === 0) end = text.length;
    end = Math.min(end, pos + MAX_DECODE_LENGTH);
    const segment = text.slice(pos, end);
    if (segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}

/** fix_text, collapse whitespace runs to one space, strip, lower-case: what CLIPTokenizer feeds its regex. */
export function cleanText(text: string): string {
  requireString(text, 'cleanText: text');
  return fixText(text).replace(SPACE_RUN, ' ').replace(EDGE_SPACE, '').toLowerCase();
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------------------

/** what a value is, for error messages: "number", "null", "array", "object"... */
function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** JS callers can pass anything: a non-string prompt is an Error naming it, not an empty prompt. */
function requireString(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw new Error(`CLIPTokenizer: ${what} must be a string, got ${describe(value)}`);
}

function readJson(file: string): unknown {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** A token field of tokenizer_config.json / special_tokens_map.json: a string or an AddedToken object. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

interface AddedToken {
  content: string;
  id: number;
}

export class CLIPTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;

  private readonly vocab: Map<string, number>;
  private readonly ranks = new Map<string, number>();
  /** added tokens, longest first, so a longer one wins where two start at the same place. */
  private readonly added: AddedToken[];
  private readonly cache = new Map<string, string[]>();

  /**
   * @param vocab   vocab.json contents (token -> id)
   * @param merges  merges.txt contents (first line is the "#version" header)
   */
  constructor(vocab: Record<string, number>, merges: string, opts: CLIPTokenizerOptions = {}) {
    if (vocab === null || typeof vocab !== 'object' || Array.isArray(vocab)) {
      throw new Error(`CLIPTokenizer: vocab must be an object (token -> id), got ${describe(vocab)}`);
    }
    requireString(merges, 'merges');
    this.vocab = new Map(Object.entries(vocab));
    const idOf = (token: string, what: string): number => {
      const id = this.vocab.get(token);
      if (id === undefined) throw new Error(`CLIPTokenizer: ${what} ${JSON.stringify(token)} is not in the vocabulary`);
      return id;
    };
    this.bosId = idOf(BOS_TOKEN, 'BOS token');
    this.eosId = idOf(EOS_TOKEN, 'EOS token');

    const lines = merges.trim().split('\n').slice(1, MAX_MERGES + 1);
    lines.forEach((line, rank) => {
      const pair = line.trim().split(/\s+/);
      if (pair.length === 2) this.ranks.set(`${pair[0]} ${pair[1]}`, rank);
    });

    let padToken = opts.padToken;
    let padId = opts.padTokenId;
    if (padToken !== undefined) {
      const id = idOf(padToken, 'pad token');
      if (padId !== undefined && padId !== id) {
        throw new Error(`CLIPTokenizer: padTokenId ${padId} does not match padToken ${JSON.stringify(padToken)} (id ${id})`);
      }
      padId = id;
    } else if (padId !== undefined) {
      const wanted = padId;
      padToken = [...this.vocab].find(([, id]) => id === wanted)?.[0];
      if (padToken === undefined) throw new Error(`CLIPTokenizer: padTokenId ${padId} is not in the vocabulary`);
    } else {
      padToken = EOS_TOKEN;
      padId = this.eosId;
    }
    this.padId = padId;

    const maxLength = opts.maxLength ?? DEFAULT_MAX_LENGTH;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new Error(`CLIPTokenizer: maxLength must be an integer >= 2 (BOS + EOS), got ${maxLength}`);
    }
    this.maxLength = maxLength;

    const added = new Map<string, number>([[BOS_TOKEN, this.bosId], [EOS_TOKEN, this.eosId], [padToken, padId]]);
    for (const [content, id] of Object.entries(opts.addedTokens ?? {})) if (content) added.set(content, id);
    this.added = [...added].map(([content, id]) => ({ content, id })).sort((a, b) => b.content.length - a.content.length);
  }

  static fromFiles(vocabJsonPath: string, mergesTxtPath: string, opts?: CLIPTokenizerOptions): CLIPTokenizer {
    const vocab = readJson(vocabJsonPath) as Record<string, number>;
    return new CLIPTokenizer(vocab, fs.readFileSync(mergesTxtPath, 'utf8'), opts);
  }

  /**
   * Loads a diffusers tokenizer folder. The pad token comes from special_tokens_map.json, else
   * tokenizer_config.json (transformers lets the map win); model_max_length and added_tokens_decoder from
   * tokenizer_config.json.
   */
  static fromFolder(dir: string): CLIPTokenizer {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new Error(`CLIPTokenizer.fromFolder: tokenizer folder not found: ${dir}`);
    }
    const file = (name: string) => path.join(dir, name);
    for (const name of ['vocab.json', 'merges.txt']) {
      if (!fs.existsSync(file(name))) throw new Error(`CLIPTokenizer.fromFolder: ${name} is missing in ${dir}`);
    }
    const optional = (name: string): Record<string, unknown> =>
      fs.existsSync(file(name)) ? (readJson(file(name)) as Record<string, unknown>) : {};
    const config = optional('tokenizer_config.json');
    const specialMap = optional('special_tokens_map.json');

    const opts: CLIPTokenizerOptions = {};
    const padToken = tokenContent(specialMap.pad_token) ?? tokenContent(config.pad_token);
    if (padToken !== undefined) opts.padToken = padToken;
    // Some exports write a sentinel like 1e30 for "no limit"; CLIP's position table is 77 long.
    const maxLen = config.model_max_length;
    if (typeof maxLen === 'number' && Number.isInteger(maxLen) && maxLen >= 2 && maxLen <= 100_000) opts.maxLength = maxLen;
    const decoder = config.added_tokens_decoder;
    if (decoder !== null && typeof decoder === 'object') {
      opts.addedTokens = {};
      for (const [id, token] of Object.entries(decoder as Record<string, unknown>)) {
        const content = tokenContent(token);
        if (content !== undefined) opts.addedTokens[content] = Number(id);
      }
    }
    return CLIPTokenizer.fromFiles(file('vocab.json'), file('merges.txt'), opts);
  }

  /** tokens as strings (byte-level unicode, '</w>' ends a word); added tokens appear as themselves. */
  tokenize(text: string): string[] {
    requireString(text, 'tokenize: text');
    const tokens: string[] = [];
    for (const piece of this.splitAdded(text)) {
      if (typeof piece !== 'string') tokens.push(piece.content);
      else for (const word of preTokenize(cleanText(piece))) for (const token of this.bpe(word)) tokens.push(token);
    }
    return tokens;
  }

  /** BPE ids of the cleaned text, without BOS/EOS, untruncated. */
  encode(text: string): number[] {
    requireString(text, 'encode: text');
    return this.encodeIds(text, Infinity);
  }

  /** BOS + ids + EOS, truncated to maxLength (maxLength - 2 BPE tokens kept), padded with padId to maxLength. */
  call(text: string): Int32Array {
    requireString(text, 'prompt');
    const row = new Int32Array(this.maxLength);
    this.writeRow(text, row);
    return row;
  }

  /** call() for each text, rows concatenated: [texts.length * maxLength], row-major. */
  callBatch(texts: string[]): Int32Array {
    if (!Array.isArray(texts)) throw new Error(`CLIPTokenizer: callBatch expects an array of prompts, got ${describe(texts)}`);
    for (let i = 0; i < texts.length; i++) requireString(texts[i], `prompt ${i} of the batch`);
    const out = new Int32Array(texts.length * this.maxLength);
    texts.forEach((text, i) => this.writeRow(text, out.subarray(i * this.maxLength, (i + 1) * this.maxLength)));
    return out;
  }

  private writeRow(text: string, row: Int32Array): void {
    const ids = this.encodeIds(text, this.maxLength - 2);
    row.fill(this.padId);
    row[0] = this.bosId;
    row.set(ids, 1);
    row[ids.length + 1] = this.eosId;
  }

  /**
   * The first `limit` ids of encode(text). Words are BPE'd one at a time and each word's tokens depend on that
   * word alone, so the words after the first `limit` ids are never BPE'd (the cleaning still sees the whole
   * text, as ftfy's fixes are not local).
   */
  private encodeIds(text: string, limit: number): number[] {
    const ids: number[] = [];
    for (const piece of this.splitAdded(text)) {
      if (ids.length >= limit) break;
      if (typeof piece !== 'string') {
        ids.push(piece.id);
        continue;
      }
      for (const word of preTokenize(cleanText(piece))) {
        if (ids.length >= limit) break;
        for (const token of this.bpe(word)) ids.push(this.vocab.get(token) ?? this.eosId);
      }
    }
    return ids.length > limit ? ids.slice(0, limit) : ids;
  }

  /** Raw text cut at added tokens (leftmost, then longest match): strings go on to cleaning and BPE. */
  private splitAdded(text: string): (string | AddedToken)[] {
    const out: (string | AddedToken)[] = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const hit = this.added.find((t) => text.startsWith(t.content, i));
      if (hit === undefined) {
        i++;
        continue;
      }
      if (i > start) out.push(text.slice(start, i));
      out.push(hit);
      i += hit.content.length;
      start = i;
    }
    if (start < text.length) out.push(text.slice(start));
    return out;
  }

  /**
   * BPE of one pre-tokenised word, with the result of transformers' `CLIPTokenizer.bpe`: while some adjacent
   * pair has a merge rank, take the lowest-ranked pair and merge every occurrence of it in one left-to-right,
   * non-overlapping sweep ('a a a' with (a, a) -> 'aa a').
   *
   * Done in O(n log n) rather than transformers' O(n^2): the symbols form a doubly linked list (a node keeps the
   * index of its first byte, so list order is index order), and a min-heap holds candidate pairs keyed by
   * (rank, index of the left node). All entries of the lowest rank are taken off the heap together and merged in
   * index order, which is transformers' sweep; pairs that a merge creates go onto the heap and can never have
   * that same rank (a merged symbol is longer than either half, and a rank names one pair), so they wait for a
   * later round, as they do in transformers. Entries are invalidated lazily: one is stale when its left node was
   * absorbed, or its left or right symbol has changed since (symbols only ever grow, so a stale entry never
   * becomes valid again); the check is that the node still exists and its pair still has the entry's rank.
   */
  private bpe(word: string): string[] {
    if (word === BOS_TOKEN || word === EOS_TOKEN) return [word];
    const cached = this.cache.get(word);
    if (cached !== undefined) return cached;

    const bytes = Buffer.from(word, 'utf8');
    const n = bytes.length;
    const symbols = Array.from(bytes, (b) => BYTE_SYMBOL[b]);
    symbols[n - 1] += '</w>';
    const next = new Int32Array(n); // index of the next live node, or -1
    const prev = new Int32Array(n); // index of the previous live node, or -1
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new PairHeap(n);
    const rankAt = (i: number): number => {
      const j = next[i];
      return j < 0 ? -1 : this.ranks.get(`${symbols[i]} ${symbols[j]}`) ?? -1;
    };
    for (let i = 0; i + 1 < n; i++) {
      const rank = rankAt(i);
      if (rank >= 0) heap.push(rank, i);
    }

    const batch: number[] = [];
    while (heap.size > 0) {
      const rank = heap.topRank();
      batch.length = 0;
      while (heap.size > 0 && heap.topRank() === rank) batch.push(heap.pop()); // left to right
      for (const i of batch) {
        if (!alive[i] || rankAt(i) !== rank) continue; // stale, or absorbed earlier in this sweep
        const j = next[i];
        symbols[i] += symbols[j];
        alive[j] = 0;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        const p = prev[i];
        if (p >= 0) {
          const r = rankAt(p);
          if (r >= 0) heap.push(r, p);
        }
        const r = rankAt(i);
        if (r >= 0) heap.push(r, i);
      }
    }

    const out: string[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(symbols[i]);
    if (word.length <= BPE_CACHE_MAX_WORD) {
      if (this.cache.size >= BPE_CACHE_LIMIT) this.cache.clear();
      this.cache.set(word, out);
    }
    return out;
  }
}

/**
 * Binary min-heap of BPE candidate pairs ordered by (rank, position), both stored in one float64 key
 * rank * stride + position (exact: rank < 2^16, position < 2^32).
 */
class PairHeap {
  private keys: Float64Array;
  private readonly stride: number;
  size = 0;

  constructor(positions: number) {
    this.stride = positions + 1;
    this.keys = new Float64Array(Math.max(16, positions * 2));
  }

  push(rank: number, position: number): void {
    if (this.size === this.keys.length) {
      const grown = new Float64Array(this.keys.length * 2);
      grown.set(this.keys);
      this.keys = grown;
    }
    const keys = this.keys;
    const key = rank * this.stride + position;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent] <= key) break;
      keys[i] = keys[parent];
      i = parent;
    }
    keys[i] = key;
  }

  topRank(): number {
    return Math.floor(this.keys[0] / this.stride);
  }

  /** removes the smallest entry and returns its position. */
  pop(): number {
    const keys = this.keys;
    const top = keys[0];
    const last = keys[--this.size];
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= this.size) break;
      if (child + 1 < this.size && keys[child + 1] < keys[child]) child++;
      if (keys[child] >= last) break;
      keys[i] = keys[child];
      i = child;
    }
    keys[i] = last;
    return top % this.stride;
  }
}
