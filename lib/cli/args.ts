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
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`option --${k} must be a number, got '${v}'`);
    return n;
  }
  int(k: string): number | undefined {
    const n = this.num(k);
    if (n !== undefined && !Number.isInteger(n)) throw new Error(`option --${k} must be an integer, got ${n}`);
    return n;
  }
  flag(k: string): boolean {
    return this.str(k) === 'true';
  }
  /** Throws on options nobody asked for (typos). */
  done(): void {
    for (const k of this.p.opts.keys()) if (!this.used.has(k)) throw new Error(`unknown option --${k}`);
  }
}
