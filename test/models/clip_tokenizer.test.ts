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
