/**
 * From files on disk to networks: opens a diffusers folder, a diffusers-prefixed file or a single-file
 * original checkpoint (lib/io/model_files), builds each component from its config, and loads its weights
 * (strict by default: every missing, unexpected or misshapen key is named).
 */
import { COMPONENTS, openModel, type OpenModelOptions, type OpenedModel, type ComponentName } from '../io/model_files';
import { UNet2DConditionModel, type UNetConfig } from './unet';
import { CLIPTextModel, type CLIPTextConfig } from './clip';
import { AutoencoderKL, type VAEConfig } from './vae';
import type { LoadOptions, LoadReport } from '../nn/params';
import { resolveDevice, type DeviceSetting, type DType } from '../tensor';

export interface LoadModelOptions extends OpenModelOptions {
  device?: DeviceSetting;
  /** storage dtype of matrix weights: f32 (default on CPU), bf16 or f16 */
  dtype?: DType;
  strict?: boolean;
  /** which components to load (default: all present) */
  components?: ComponentName[];
}

export interface LoadedModel {
  kind: 'sd15' | 'sdxl';
  layout: OpenedModel['layout'];
  path: string;
  unet?: UNet2DConditionModel;
  vae?: AutoencoderKL;
  textEncoder?: CLIPTextModel;
  textEncoder2?: CLIPTextModel;
  configs: OpenedModel['configs'];
  tokenizerDirs: OpenedModel['tokenizerDirs'];
  reports: Partial<Record<ComponentName, LoadReport>>;
  dispose(): void;
}

export function loadModel(path: string, opts: LoadModelOptions = {}): LoadedModel {
  // (a typo, a string for the array, or an empty list had loaded an empty model without a word)
  if (opts.components !== undefined &&
      !(Array.isArray(opts.components) && opts.components.length > 0 && opts.components.every((c) => (COMPONENTS as readonly string[]).includes(c))))
    throw new Error(`loadModel: components must be a non-empty array of ${COMPONENTS.join(', ')}; got ${JSON.stringify(opts.components)}`);
  if (opts.dtype !== undefined && !['f32', 'f16', 'bf16'].includes(opts.dtype as string))
    throw new Error(`loadModel: dtype must be f32, f16 or bf16, got ${JSON.stringify(opts.dtype)}`);
  const m = openModel(path, opts);
  const lo: LoadOptions = { dtype: opts.dtype, device: resolveDevice(opts.device), strict: opts.strict ?? true };
  const want = new Set<ComponentName>(opts.components ?? ['unet', 'vae', 'text_encoder', 'text_encoder_2']);
  const out: LoadedModel = {
    kind: m.kind, layout: m.layout, path, configs: m.configs, tokenizerDirs: m.tokenizerDirs, reports: {},
    dispose() {
      out.unet?.dispose(); out.vae?.dispose(); out.textEncoder?.dispose(); out.textEncoder2?.dispose();
    },
  };
  try {
    if (m.kind === 'sd15' && opts.components?.includes('text_encoder_2')) throw new Error(`${path}: an SD1.5 model has no text_encoder_2`);
    const label = (c: ComponentName) => `${path} [${c}]`;
    const src = m.components;
    if (want.has('unet') && src.unet) {
      if (!m.configs.unet) throw new Error(`${path}: no unet config`);
      out.unet = new UNet2DConditionModel(m.configs.unet as UNetConfig);
      out.reports.unet = out.unet.load(src.unet, lo, label('unet'));
    }
    if (want.has('vae') && src.vae) {
      if (!m.configs.vae) throw new Error(`${path}: no vae config`);
      out.vae = new AutoencoderKL(m.configs.vae as VAEConfig);
      out.reports.vae = out.vae.load(src.vae, lo, label('vae'));
    }
    if (want.has('text_encoder') && src.text_encoder) {
      if (!m.configs.text_encoder) throw new Error(`${path}: no text_encoder config`);
      out.textEncoder = new CLIPTextModel(m.configs.text_encoder as CLIPTextConfig, 'text_encoder');
      out.reports.text_encoder = out.textEncoder.load(src.text_encoder, lo, label('text_encoder'));
    }
    if (want.has('text_encoder_2') && src.text_encoder_2) {
      if (!m.configs.text_encoder_2) throw new Error(`${path}: no text_encoder_2 config`);
      out.textEncoder2 = new CLIPTextModel(m.configs.text_encoder_2 as CLIPTextConfig, 'text_encoder_2', true);
      out.reports.text_encoder_2 = out.textEncoder2.load(src.text_encoder_2, lo, label('text_encoder_2'));
    }
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    m.close();
  }
  return out;
}
