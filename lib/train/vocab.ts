/**
 * A CLIP BPE vocabulary built from a word list (the captions of a procedural dataset), in the files
 * lib/models/clip_tokenizer.ts and transformers' CLIPTokenizer read: vocab.json, merges.txt,
 * tokenizer_config.json, special_tokens_map.json.
 *
 * Vocabulary: the 256 byte symbols, the same with "</w>" (any text still tokenises, byte by byte), every merge
 * product, then <|startoftext|> and <|endoftext|> (the largest ids, pad = eos as in SD1.5).
 * Merges: each word is tokenised with the merges so far; while it is more than one token, its leftmost pair is
 * appended as a new merge. Earlier words are already single tokens, so a later merge can never change them,
 * and every caption word becomes exactly one token.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CLIPTokenizer } from '../models/clip_tokenizer';

const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';

function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : next++));
  return out;
}

export interface BuiltVocab {
  vocab: Record<string, number>;
  merges: string[];
  bosId: number;
  eosId: number;
}

export function buildVocab(words: readonly string[]): BuiltVocab {
  const syms = byteSymbols();
  const tokens: string[] = [...syms, ...syms.map((s) => `${s}</w>`)];
  const merges: string[] = [];
  const have = new Set(tokens);
  const make = () => {
    const v: Record<string, number> = {};
    tokens.forEach((t, i) => (v[t] = i));
    v[BOS] = tokens.length;
    v[EOS] = tokens.length + 1;
    return v;
  };
  for (const w of words) {
    for (let guard = 0; guard < 64; guard++) {
      const tok = new CLIPTokenizer(make(), ['#version: 0.2', ...merges].join('\n')).tokenize(w);
      if (tok.length <= 1) break;
      const pair = `${tok[0]} ${tok[1]}`;
      merges.push(pair);
      const merged = tok[0] + tok[1];
      if (!have.has(merged)) {
        have.add(merged);
        tokens.push(merged);
      }
    }
  }
  const vocab = make();
  return { vocab, merges, bosId: vocab[BOS], eosId: vocab[EOS] };
}

/** Writes a diffusers tokenizer/ folder; maxLength is model_max_length (the text encoder's positions). */
export function writeTokenizerFolder(dir: string, v: BuiltVocab, maxLength: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const special = { content: '', lstrip: false, normalized: true, rstrip: false, single_word: false };
  const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text);
  write('vocab.json', JSON.stringify(v.vocab));
  write('merges.txt', ['#version: 0.2', ...v.merges].join('\n') + '\n');
  write('special_tokens_map.json', JSON.stringify({
    bos_token: { ...special, content: BOS }, eos_token: { ...special, content: EOS },
    pad_token: EOS, unk_token: { ...special, content: EOS },
  }, null, 2));
  write('tokenizer_config.json', JSON.stringify({
    added_tokens_decoder: {
      [v.bosId]: { ...special, content: BOS, special: true },
      [v.eosId]: { ...special, content: EOS, special: true },
    },
    bos_token: BOS, eos_token: EOS, pad_token: EOS, unk_token: EOS, clean_up_tokenization_spaces: true,
    errors: 'replace', model_max_length: maxLength, tokenizer_class: 'CLIPTokenizer',
  }, null, 2));
}
