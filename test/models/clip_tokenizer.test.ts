import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CLIPTokenizer, cleanText, fixText } from '../../lib/models/clip_tokenizer';

interface TokenizerCase {
  name: string;
  text: string;
  tokens_ftfy: string[];
  ids_unpadded_ftfy: number[];
  input_ids_pad49407_ftfy: number[];
  input_ids_pad0_ftfy: number[];
}

const cases: TokenizerCase[] = JSON.parse(
  fs.readFileSync(path.resolve(__dirname, '../fixtures/tokenizer/cases.json'), 'utf8'),
).cases;

// ftfy subset: needs no vocabulary, always runs.

test('fixText: mojibake (UTF-8 read as Windows-1252 / Latin-1) is re-decoded', () => {
  assert.is(fixText('cafÃ© and â€œquotedâ€\x9d'), 'café and "quoted"');
  assert.is(fixText('cafÃƒÂ©'), 'café'); // twice mis-decoded
  assert.is(fixText('ðŸ˜€ smile'), '😀 smile');
  assert.is(fixText('Ð¿Ñ€Ð¸Ð²ÐµÑ‚'), 'привет');
  assert.is(fixText('café but cafÃ©'), 'café but café'); // mixed line: each broken run on its own
});

test('fixText: legitimate accented text next to punctuation is left alone', () => {
  for (const text of ['STRAßE…', 'JOSÉ’S', 'naïve café', 'Ünïcödé ÜBER straße', 'señor «ÉCOLE»', 'Ü°C']) {
    assert.is(fixText(text), text.replace('’', "'"), text);
  }
});

test('fixText: HTML entities, only until the first line that contains "<"', () => {
  assert.is(fixText('HTML &amp; entities &lt;3 &quot;q&quot;'), 'HTML & entities <3 "q"');
  assert.is(fixText('&EACUTE;t&eacute; &#233; &#xE9; &#x1F600; &AMP;'), 'Été é é 😀 &');
  assert.is(fixText('&#59; &#12ab; &bogus; &#128;'), '&#59; &#12ab; &bogus; €');
  assert.is(fixText('a < b &amp; c'), 'a < b &amp; c');
  assert.is(fixText('x &amp; y\na < b &amp; c\n&amp;'), 'x & y\na < b &amp; c\n&amp;');
});

test('fixText: width, ligatures, quotes, C1 and control characters, NFC', () => {
  assert.is(fixText('ＡＢＣ１２３\u3000ｶﾀｶﾅ'), 'ABC123 カタカナ');
  assert.is(fixText('ﬁne ﬂow ﬃ Ĳssel'), 'fine flow ffi IJssel');
  assert.is(fixText('’a‘ “b” ‛c‟ ʼd'), "'a' \"b\" 'c\" 'd");
  assert.is(fixText('a\x85b\x96c'), 'a…b–c');
  assert.is(fixText('zero\u200bwidth\u200dchars and\x07bell\ufeff\x1b[31mred\x1b[0m'), 'zero\u200bwidth\u200dchars andbellred');
  assert.is(fixText('cafe\u0301'), 'café');
  assert.is(fixText('line\r\nbreak\u2028x'), 'line\nbreak\nx');
});

test('cleanText: whitespace runs (Python \\s, incl. NBSP) collapse, ends strip, lower-case', () => {
  assert.is(cleanText('  A\u00a0B\t\tC\n\u2003D  '), 'a b c d');
  assert.is(cleanText(''), '');
});

// BPE: the O(n log n) merge loop against the old quadratic one (a copy of the code that the golden cases below
// checked against transformers' bpe), kept here as the reference.

const BYTE_SYMBOL: string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : next++));
  return table;
})();
const SYMBOL_BYTE = new Map(BYTE_SYMBOL.map((c, b) => [c, b]));
function referenceBpe(word: string, ranks: Map<string, number>): string[] {
  let symbols = Array.from(Buffer.from(word, 'utf8'), (b) => BYTE_SYMBOL[b]);
  symbols[symbols.length - 1] += '</w>';
  while (symbols.length > 1) {
    let best = Infinity;
    let first = '';
    let second = '';
    for (let i = 0; i + 1 < symbols.length; i++) {
      const rank = ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
      if (rank !== undefined && rank < best) {
        best = rank;
        first = symbols[i];
        second = symbols[i + 1];
      }
    }
    if (best === Infinity) break;
    const merged: string[] = [];
    for (let i = 0; i < symbols.length; i++) {
      if (symbols[i] === first && i + 1 < symbols.length && symbols[i + 1] === second) {
        merged.push(first + second);
        i++;
      } else {
        merged.push(symbols[i]);
      }
    }
    symbols = merged;
  }
  return symbols;
}

/** the private per-word BPE (no cleaning or pre-tokenising, so any string is one word). */
const bpeOf = (tok: CLIPTokenizer, word: string): string[] =>
  (tok as unknown as { bpe(word: string): string[] }).bpe(word);

let seed = 0x2545f491;
const rand = (n: number): number => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
};
const pick = <T>(xs: ArrayLike<T>): T => xs[rand(xs.length)];

test('bpe: same tokens as the old loop under shuffled merge tables (merges that make a lower-ranked pair)', () => {
  // In a real merges.txt a pair containing a merged symbol always ranks after the merge that made it; here it
  // need not, so a merge can create a better pair next to a later occurrence of the same pair ('x y x y' with
  // (xy, x) ranked before (x, y)): transformers still merges every (x, y) in one sweep first.
  const special = { '<|startoftext|>': 0, '<|endoftext|>': 1 };
  const fixed = new CLIPTokenizer(special, '#version: 0.2\nxy x\nx y\n');
  assert.equal(bpeOf(fixed, 'xyxyz'), ['xy', 'xy', 'z</w>']);
  assert.equal(bpeOf(fixed, 'xyxyz'), referenceBpe('xyxyz', new Map([['xy x', 0], ['x y', 1]])));
  for (let table = 0; table < 300; table++) {
    const alphabet = 'abcd'.slice(0, 2 + rand(3));
    const tokens = [...alphabet, ...Array.from(alphabet, (c) => c + '</w>')];
    const merges: string[] = [];
    for (let m = rand(40); m >= 0; m--) {
      const a = pick(tokens.filter((t) => !t.endsWith('</w>')));
      const b = pick(tokens);
      if (merges.includes(`${a} ${b}`)) continue;
      merges.push(`${a} ${b}`);
      tokens.push(a + b);
    }
    for (let i = merges.length - 1; i > 0; i--) {
      const j = rand(i + 1);
      [merges[i], merges[j]] = [merges[j], merges[i]];
    }
    const ranks = new Map(merges.map((m, r) => [m, r]));
    const tok = new CLIPTokenizer(special, ['#version: 0.2', ...merges].join('\n'));
    for (let w = 0; w < 40; w++) {
      const word = Array.from({ length: 1 + rand(30) }, () => pick(alphabet)).join('');
      assert.equal(bpeOf(tok, word), referenceBpe(word, ranks), `${JSON.stringify(word)} with ${merges.join(' | ')}`);
    }
  }
});

// Golden cases: need the vocabulary from ../shared/fixtures (not shipped, licence).

const FIXTURES = path.resolve(__dirname, '../../../shared/fixtures');
const VOCAB = path.join(FIXTURES, 'tokenizer/vocab.json');
const MERGES = path.join(FIXTURES, 'tokenizer/merges.txt');

if (!fs.existsSync(VOCAB) || !fs.existsSync(MERGES)) {
  console.log(`clip_tokenizer: SKIP golden tokenizer cases, ${path.join(FIXTURES, 'tokenizer')} not found (vocab.json/merges.txt are not shipped)`);
} else {
  const sd15 = CLIPTokenizer.fromFiles(VOCAB, MERGES);
  const sdxl2 = CLIPTokenizer.fromFiles(VOCAB, MERGES, { padToken: '!' });

  test('cases.json has the 42 golden cases', () => {
    assert.is(cases.length, 42);
  });

  for (const c of cases) {
    test(`case ${c.name}`, () => {
      assert.equal(sd15.tokenize(c.text), c.tokens_ftfy, 'tokens');
      assert.equal(sd15.encode(c.text), c.ids_unpadded_ftfy.slice(1, -1), 'encode');
      assert.equal(Array.from(sd15.call(c.text)), c.input_ids_pad49407_ftfy, 'pad 49407');
      assert.equal(Array.from(sdxl2.call(c.text)), c.input_ids_pad0_ftfy, 'pad "!" = 0');
    });
  }

  test('ids: BOS/EOS/pad and maxLength', () => {
    assert.is(sd15.bosId, 49406);
    assert.is(sd15.eosId, 49407);
    assert.is(sd15.padId, 49407);
    assert.is(sd15.maxLength, 77);
    assert.is(sdxl2.padId, 0);
  });

  test('padTokenId: 0 behaves as padToken "!" (the pad token is registered as a special token)', () => {
    const byId = CLIPTokenizer.fromFiles(VOCAB, MERGES, { padTokenId: 0 });
    for (const c of cases) assert.equal(Array.from(byId.call(c.text)), c.input_ids_pad0_ftfy, c.name);
    assert.throws(() => CLIPTokenizer.fromFiles(VOCAB, MERGES, { padToken: '!', padTokenId: 5 }), /does not match/);
    assert.throws(() => CLIPTokenizer.fromFiles(VOCAB, MERGES, { padToken: '<nope>' }), /not in the vocabulary/);
  });

  test('callBatch: rows of call() back to back', () => {
    const texts = cases.map((c) => c.text);
    const batch = sdxl2.callBatch(texts);
    assert.is(batch.length, texts.length * 77);
    texts.forEach((t, i) => assert.equal(Array.from(batch.subarray(i * 77, (i + 1) * 77)), Array.from(sdxl2.call(t))));
    assert.is(sdxl2.callBatch([]).length, 0);
  });

  test('maxLength option truncates to maxLength - 2 BPE tokens', () => {
    const short = CLIPTokenizer.fromFiles(VOCAB, MERGES, { maxLength: 5 });
    assert.equal(Array.from(short.call('a photo of a cat')), [49406, 320, 1125, 539, 49407]);
    assert.equal(Array.from(short.call('a')), [49406, 320, 49407, 49407, 49407]);
    assert.throws(() => CLIPTokenizer.fromFiles(VOCAB, MERGES, { maxLength: 1 }), /maxLength/);
  });

  test('"!" only becomes 0 when typed: ftfy output and the SD1.5 tokenizer keep "!</w>" = 256', () => {
    assert.equal(sdxl2.encode('hi!'), [1883, 0]);
    assert.equal(sdxl2.encode('hi&#33;'), sd15.encode('hi!')); // entity decoded after the special-token split
    assert.equal(sd15.encode('hi!'), [1883, 256]);
  });

  // BPE against the reference loop with the real merges (ranks as the constructor reads merges.txt).
  const refRanks = new Map<string, number>();
  fs.readFileSync(MERGES, 'utf8').trim().split('\n').slice(1, 49152 - 256 - 2 + 1).forEach((line, rank) => {
    const pair = line.trim().split(/\s+/);
    if (pair.length === 2) refRanks.set(`${pair[0]} ${pair[1]}`, rank);
  });
  const vocabIds = new Map(Object.entries(JSON.parse(fs.readFileSync(VOCAB, 'utf8')) as Record<string, number>));
  const referenceRow = (word: string): number[] => {
    const ids = referenceBpe(word, refRanks).map((t) => vocabIds.get(t) ?? 49407).slice(0, 75);
    return [49406, ...ids, 49407, ...new Array(75 - ids.length).fill(49407)];
  };

  // The text of every vocabulary token (byte-level symbols back to UTF-8), and the characters they use.
  const tokenTexts = [...vocabIds.keys()]
    .filter((t) => !t.startsWith('<|'))
    .map((t) => Buffer.from(Array.from(t.replace(/<\/w>$/, ''), (c) => SYMBOL_BYTE.get(c) ?? 0x3f)).toString('utf8'))
    .filter((t) => t.length > 0 && !t.includes('\ufffd'));
  const vocabChars = [...new Set(tokenTexts.flatMap((t) => Array.from(t)))];

  function randomWord(): string {
    const len = 1 + rand(60);
    let w = '';
    switch (rand(5)) {
      case 0: // any characters of the vocabulary
        while (w.length < len) w += pick(vocabChars);
        break;
      case 1: { // a few letters only: many repeated pairs and runs
        const alphabet = Array.from({ length: 1 + rand(3) }, () => pick('abcdefghijklmnopqrstuvwxyz!.'));
        while (w.length < len) w += pick(alphabet);
        break;
      }
      case 2: { // runs of one character, and of a short pattern
        const unit = Array.from({ length: 1 + rand(3) }, () => pick(vocabChars.slice(0, 200))).join('');
        w = unit.repeat(Math.ceil(len / unit.length)).slice(0, len);
        if (rand(2)) w += pick(vocabChars);
        break;
      }
      default: // whole tokens back to back, so long merges apply
        while (w.length < len) w += pick(tokenTexts);
        w = w.slice(0, 60);
    }
    return w;
  }

  test('bpe: same tokens as the old quadratic loop on 6,000 random words and on runs of one character', () => {
    const tok = CLIPTokenizer.fromFiles(VOCAB, MERGES);
    for (let i = 0; i < 6000; i++) {
      const w = randomWord();
      assert.equal(bpeOf(tok, w), referenceBpe(w, refRanks), JSON.stringify(w));
    }
    for (const c of ['a', 's', 'l', 'o', '!', '.', '0', 'é', '😀', 'ab', 'aab', 'xo']) {
      for (let n = 1; n <= 70; n++) {
        const w = c.repeat(n);
        assert.equal(bpeOf(tok, w), referenceBpe(w, refRanks), JSON.stringify(w));
        assert.equal(bpeOf(tok, w + 'b'), referenceBpe(w + 'b', refRanks), JSON.stringify(w + 'b'));
      }
    }
    assert.equal(bpeOf(tok, 'aaa'), referenceBpe('aaa', refRanks));
  });

  test('bpe: a 100,000-character word takes well under a second; 3,000 characters match the old loop', () => {
    const tok = CLIPTokenizer.fromFiles(VOCAB, MERGES);
    const letters = (n: number) => Array.from({ length: n }, () => pick('abcdefghijklmnopqrstuvwxyz')).join('');
    const short = letters(3000);
    assert.equal(bpeOf(tok, short), referenceBpe(short, refRanks));
    assert.equal(Array.from(tok.call(short)), referenceRow(short));
    const runs = 'a'.repeat(1500) + 'l'.repeat(1501);
    assert.equal(bpeOf(tok, runs), referenceBpe(runs, refRanks));
    assert.equal(Array.from(tok.call(runs)), referenceRow(runs));

    for (const long of [letters(100_000), 'a'.repeat(100_000)]) {
      const t0 = performance.now();
      const row = tok.call(long);
      const ms = performance.now() - t0;
      console.log(`clip_tokenizer: call() on a ${long.length.toLocaleString('en')}-character word: ${ms.toFixed(0)} ms`);
      assert.ok(ms < 2000, `${ms} ms`);
      assert.is(row.length, 77);
      assert.is(row[76], 49407); // 75 BPE tokens kept, then EOS
    }
  });

  test('call: only the words that reach the 77-token window are BPE\'d, with the same ids', () => {
    const tok = CLIPTokenizer.fromFiles(VOCAB, MERGES);
    const words = Array.from({ length: 400 }, () => randomWord().replace(/[^a-z]/g, '') || 'x');
    for (const n of [1, 30, 74, 75, 76, 77, 400]) {
      const text = words.slice(0, n).join(' <|endoftext|> '.slice(0, n % 3 === 0 ? 15 : 1));
      const ids = tok.encode(text).slice(0, 75);
      const want = [49406, ...ids, 49407, ...new Array(75 - ids.length).fill(49407)];
      assert.equal(Array.from(tok.call(text)), want, `${n} words`);
      assert.equal(Array.from(tok.callBatch([text, 'a cat']).subarray(0, 77)), want, `${n} words, batch`);
    }
  });

  const tinyXL = path.join(FIXTURES, 'tiny-sdxl/diffusers');
  test('fromFolder: tokenizer (pad <|endoftext|>) and tokenizer_2 (pad "!")', () => {
    const t1 = CLIPTokenizer.fromFolder(path.join(tinyXL, 'tokenizer'));
    const t2 = CLIPTokenizer.fromFolder(path.join(tinyXL, 'tokenizer_2'));
    assert.is(t1.padId, 49407);
    assert.is(t2.padId, 0);
    assert.is(t1.maxLength, 77);
    assert.is(t2.maxLength, 77);
    for (const c of cases) {
      assert.equal(Array.from(t1.call(c.text)), c.input_ids_pad49407_ftfy, c.name);
      assert.equal(Array.from(t2.call(c.text)), c.input_ids_pad0_ftfy, c.name);
    }
  });
}

test('a prompt that is not a string is an Error naming it (it had tokenised as an empty prompt)', () => {
  const tok = new CLIPTokenizer({ '<|startoftext|>': 0, '<|endoftext|>': 1, 'a</w>': 2 }, '#version: 0.2\n');
  const bad: [unknown, string][] = [[123, 'number'], [{}, 'object'], [null, 'null'], [undefined, 'undefined'], [['a'], 'array'], [true, 'boolean']];
  const anyTok = tok as unknown as Record<'call' | 'encode' | 'tokenize', (x: unknown) => unknown>;
  for (const [value, kind] of bad) {
    const got = new RegExp(`^CLIPTokenizer: .*must be a string, got ${kind}$`);
    assert.throws(() => anyTok.call(value), (e: Error) => e instanceof Error && got.test(e.message) && /prompt/.test(e.message));
    assert.throws(() => anyTok.encode(value), (e: Error) => got.test(e.message));
    assert.throws(() => anyTok.tokenize(value), (e: Error) => got.test(e.message));
    assert.throws(() => (fixText as (x: unknown) => string)(value), (e: Error) => got.test(e.message));
    assert.throws(() => (cleanText as (x: unknown) => string)(value), (e: Error) => got.test(e.message));
  }
  const batch = tok.callBatch as (x: unknown) => Int32Array;
  assert.throws(() => batch.call(tok, ['a cat', 5]), (e: Error) => e.message === 'CLIPTokenizer: prompt 1 of the batch must be a string, got number');
  assert.throws(() => batch.call(tok, [null]), (e: Error) => /prompt 0 of the batch must be a string, got null/.test(e.message));
  assert.throws(() => batch.call(tok, 'a cat'), (e: Error) => /callBatch expects an array of prompts, got string/.test(e.message));
  assert.throws(() => batch.call(tok, undefined), (e: Error) => /got undefined/.test(e.message));
  assert.equal(Array.from(tok.call('a')), [0, 2, 1, ...new Array(74).fill(1)]);
  assert.throws(() => new CLIPTokenizer({ '<|startoftext|>': 0, '<|endoftext|>': 1 }, 5 as unknown as string), /merges must be a string, got number/);
  assert.throws(() => new CLIPTokenizer(null as unknown as Record<string, number>, ''), /vocab must be an object/);
});

test('fromFolder: a missing folder or file is an Error that names it', () => {
  const missing = path.join(os.tmpdir(), 'hypersd-no-such-tokenizer-folder');
  assert.throws(() => CLIPTokenizer.fromFolder(missing), (e: Error) => e.message.includes(missing));
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'hypersd-tok-'));
  try {
    assert.throws(
      () => CLIPTokenizer.fromFolder(empty),
      (e: Error) => e.message.includes(empty) && e.message.includes('vocab.json'),
    );
  } finally {
    fs.rmSync(empty, { recursive: true });
  }
});

test.run();
