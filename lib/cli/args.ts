import * as fs from 'fs';
import * as path from 'path';

/** A small argv parser: --key value, --key=value, --flag, repeated keys collect, positionals. */
export interface Parsed { _: string[]; opts: Map<string, string[]> }

export function parseArgs(argv: string[], flags: Set<string> = new Set()): Parsed {
  const out: Parsed = { _: [], opts: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      let key = a.slice(2), val: string;
      const eq = key.indexOf('=');
      if (eq >= 0) {
        val = key.slice(eq + 1);
        key = key.slice(0, eq);
      } else if (flags.has(key)) val = 'true';
      else {
        if (i + 1 >= argv.length) throw new Error(`option --${key} needs a value`);
        // "--prompt --out x.png" had taken "--out" as the prompt (a value that starts so is written --key=value)
        if (argv[i + 1].startsWith('--')) throw new Error(`option --${key} needs a value, got the option ${argv[i + 1]} (write --${key}=... for a value that starts with --)`);
        val = argv[++i];
      }
      const l = out.opts.get(key) ?? [];
      l.push(val);
      out.opts.set(key, l);
    } else out._.push(a);
  }
  return out;
}

export class Opts {
  private used = new Set<string>();
  constructor(private p: Parsed) {}
  str(k: string): string | undefined {
    this.used.add(k);
    const v = this.p.opts.get(k);
    return v ? v[v.length - 1] : undefined;
  }
  all(k: string): string[] {
    this.used.add(k);
    return this.p.opts.get(k) ?? [];
  }
  req(k: string): string {
    const v = this.str(k);
    if (v === undefined) throw new Error(`missing required option --${k}`);
    return v;
  }
  num(k: string): number | undefined {
    const v = this.str(k);
    if (v === undefined) return undefined;
    const n = Number(v);  // (Number('') and Number(' ') are 0)
    if (v.trim() === '' || !Number.isFinite(n)) throw new Error(`option --${k} must be a number, got '${v}'`);
    return n;
  }
  int(k: string): number | undefined {
    const n = this.num(k);
    if (n !== undefined && !Number.isInteger(n)) throw new Error(`option --${k} must be an integer, got ${n}`);
    return n;
  }
  /** One of the allowed values, or undefined when the option is not given. */
  choice<T extends string>(k: string, allowed: readonly T[]): T | undefined {
    const v = this.str(k);
    if (v !== undefined && !allowed.includes(v as T)) throw new Error(`option --${k} must be ${allowed.join(', ')}; got '${v}'`);
    return v as T | undefined;
  }
  flag(k: string): boolean {
    return this.str(k) === 'true';
  }
  /** Throws on options nobody asked for (typos). */
  done(): void {
    for (const k of this.p.opts.keys()) if (!this.used.has(k)) throw new Error(`unknown option --${k}`);
  }
}

/** A file the command will write once its work is done, checked before the work: its folder exists and is
 * writable, and the path is not a folder itself. */
export function checkOutFile(flag: string, file: string): void {
  const abs = path.resolve(file), dir = path.dirname(abs);
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a folder');
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    throw new Error(`${flag} ${file}: cannot write into ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) throw new Error(`${flag} ${file}: is a folder, not a file`);
}

/** A folder the command reads (e.g. --config-from), checked before any work. */
export function checkInFolder(flag: string, dir: string): void {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${flag} ${dir}: no such folder`);
}
