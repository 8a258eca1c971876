/** `hypersd info`: what a file or folder is (checkpoint kind and layout, or LoRA format, rank and modules). */
import * as fs from 'fs';
import * as path from 'path';
import { SafeTensors } from '../io/safetensors';
import { openModel } from '../io/model_files';

export function describeFile(p: string): string {
  if (!fs.existsSync(p)) throw new Error(`${p}: no such file or folder`);
  const st0 = fs.statSync(p);
  // A file is a LoRA when its keys say so, whatever its name ('…_lora_fused.safetensors' may be a full model)
  if (!st0.isDirectory()) {
    const lora = loraSummary(p);
    if (lora) return lora;
  }
  const m = openModel(p);
  try {
    const lines = [`${p}: ${m.kind === 'sdxl' ? 'SDXL' : 'SD1.5'} model, ${m.layout} layout`];
    for (const [c, map] of Object.entries(m.components)) {
      if (!map) continue;
      let n = 0;
      for (const w of map.values()) n += w.shape.reduce((a, b) => a * b, 1);
      const dt = new Set([...map.values()].map((w) => w.dtype));
      lines.push(`  ${c}: ${map.size} tensors, ${n.toLocaleString('en-US')} parameters, ${[...dt].join('/')}`);
    }
    if (m.ignored.length) lines.push(`  ignored keys: ${m.ignored.length}`);
    return lines.join('\n');
  } finally {
    m.close();
  }
}

function loraSummary(p: string): string | null {
  const st = SafeTensors.open(p);
  try {
    const keys = st.keys();
    const kohya = keys.filter((k) => /^lora_(unet|te1|te2|te)_/.test(k));
    const peft = keys.filter((k) => /\.lora_[AB]\.weight$/.test(k));
    if (!kohya.length && !peft.length) return null;
    const format = kohya.length ? (keys.some((k) => /^lora_unet_(input|middle|output)_block/.test(k)) ? 'kohya (original LDM module names)' : 'kohya (diffusers module names)') : 'peft/diffusers';
    const downs = keys.filter((k) => k.endsWith('lora_down.weight') || k.endsWith('lora_A.weight'));
    const ranks = new Set(downs.map((k) => st.info(k).shape[0]));
    const comp = new Map<string, number>();
    let conv = 0;
    for (const k of downs) {
      const c = k.startsWith('lora_unet_') || k.startsWith('unet.') ? 'unet'
        : k.startsWith('lora_te2_') || k.startsWith('text_encoder_2.') ? 'text_encoder_2' : 'text_encoder';
      comp.set(c, (comp.get(c) ?? 0) + 1);
      if (st.info(k).shape.length === 4 && st.info(k).shape[2] > 1) conv++;
    }
    const lines = [`${p}: LoRA, ${format} format, rank ${[...ranks].join('/')}, ${downs.length} modules`];
    for (const [c, n] of comp) lines.push(`  ${c}: ${n} modules`);
    if (conv) lines.push(`  conv (3x3) LoRA modules: ${conv}`);
    const meta = st.metadata;
    if (meta.ss_network_dim) lines.push(`  kohya metadata: dim ${meta.ss_network_dim}, alpha ${meta.ss_network_alpha}`);
    if (meta.lora_adapter_metadata) lines.push(`  peft metadata: ${meta.lora_adapter_metadata.slice(0, 120)}`);
    const sdxl = comp.has('text_encoder_2') || keys.some((k) => /lora_te1_|text_encoder_2\.|add_embedding/.test(k));
    lines.push(`  for: ${sdxl ? 'SDXL' : 'SD1.5 (or SDXL without text-encoder LoRA)'}`);
    return lines.join('\n');
  } finally {
    st.close();
  }
}
