/** A value as an Error message shows it: numbers as they are, the rest as JSON (its type when it has none). */
export function show(v: unknown): string {
  if (typeof v === 'number') return String(v);
  try {
    return JSON.stringify(v) ?? typeof v;
  } catch {
    return typeof v;
  }
}
