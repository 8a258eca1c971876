import * as fs from 'fs';
import * as path from 'path';

/** A value as an Error message shows it: numbers as they are, functions as 'a function', the rest as JSON (its type when it has none). */
export function show(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'function') return 'a function';
  try {
    return JSON.stringify(v) ?? typeof v;
  } catch {
    return typeof v;
  }
}

/**
 * An options object's shape: anything but a plain object (null, an array, a number) is
 * `${where}: options must be an object`; a key not in `known` (and not set to undefined) is
 * `${where}: unknown option(s) X (known: ...)`.
 */
export function checkOptionKeys(where: string, o: unknown, known: readonly string[]): void {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${where}: options must be an object`);
  const rec = o as Record<string, unknown>;
  const unknown = Object.keys(rec).filter((k) => !known.includes(k) && rec[k] !== undefined);
  if (unknown.length) throw new Error(`${where}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${known.join(', ')})`);
}

/** Throws `${file}: cannot ${action}: folder <dir> does not exist` unless the folder `file` goes into is one. */
export function checkOutputFolder(file: string, action: string): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${file}: cannot ${action}: folder ${dir} does not exist`);
}
