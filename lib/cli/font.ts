/** A 5x7 bitmap font (digits, a few letters) for labelling comparison grids without any font files. */
const GLYPHS: Record<string, string[]> = {
  '0': ['01110', '10001', '10011', '10101', '11001', '10001', '01110'],
  '1': ['00100', '01100', '00100', '00100', '00100', '00100', '01110'],
  '2': ['01110', '10001', '00001', '00010', '00100', '01000', '11111'],
  '3': ['11110', '00001', '00001', '01110', '00001', '00001', '11110'],
  '4': ['00010', '00110', '01010', '10010', '11111', '00010', '00010'],
  '5': ['11111', '10000', '11110', '00001', '00001', '10001', '01110'],
  '6': ['00110', '01000', '10000', '11110', '10001', '10001', '01110'],
  '7': ['11111', '00001', '00010', '00100', '01000', '01000', '01000'],
  '8': ['01110', '10001', '10001', '01110', '10001', '10001', '01110'],
  '9': ['01110', '10001', '10001', '01111', '00001', '00010', '01100'],
  s: ['00000', '00000', '01111', '10000', '01110', '00001', '11110'],
  t: ['01000', '01000', '11100', '01000', '01000', '01001', '00110'],
  e: ['00000', '00000', '01110', '10001', '11111', '10000', '01110'],
  p: ['00000', '00000', '11110', '10001', '11110', '10000', '10000'],
  ' ': ['00000', '00000', '00000', '00000', '00000', '00000', '00000'],
};

/** Draws text into an RGB image at (x, y), each font pixel a scale x scale block. Unknown characters are skipped. */
export function drawText(img: { width: number; height: number; data: Uint8Array }, text: string, x: number, y: number, scale: number, rgb: [number, number, number]): void {
  let cx = x;
  for (const ch of text) {
    const g = GLYPHS[ch];
    if (g) {
      for (let r = 0; r < 7; r++)
        for (let c = 0; c < 5; c++) {
          if (g[r][c] !== '1') continue;
          for (let dy = 0; dy < scale; dy++)
            for (let dx = 0; dx < scale; dx++) {
              const px = cx + c * scale + dx, py = y + r * scale + dy;
              if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
              const o = (py * img.width + px) * 3;
              img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2];
            }
        }
    }
    cx += 6 * scale;
  }
}
