/**
 * Stable Diffusion 1.5 / SDXL text-to-image and image-to-image, the way diffusers runs them, with Hyper-SD
 * presets. One generate() call: encode prompts (CFG batches cond and uncond together), draw initial latents
 * (Philox, or PyTorch's CPU generator so a seed gives a diffusers script's latents), run the sampler (one fused
 * scheduler-step op per step), decode with the VAE, return RGB bytes. Calls are queued one at a time per
 * pipeline; an AbortSignal stops between steps and frees everything.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as hs from '../tensor';
import { Tensor, tensor, tidy, zeros } from '../tensor';
import * as ops from '../ops';
import { exp } from '../ops/unary';
import { loadModel, type LoadModelOptions, type LoadedModel } from '../models/load';
import { CLIPTokenizer } from '../models/clip_tokenizer';
import { createSampler, samplerConfigFromDiffusers, type SamplerName, type SchedulerConfig, type StepPlan } from '../schedulers';
import { TorchCpuGenerator } from '../random/torch_cpu';
import { getPreset } from './presets';
import { LoraManager, type LoadedLora, type LoraMode } from './lora';
import { loraTargetFromModel } from '../models/lora';
import { openModel } from '../io/model_files';
import { encodePNG, readPNG, type RawImage } from '../io/png';
import { errorScope } from '../native';

export interface PipelineOptions extends LoadModelOptions {
  /** tokenizer folder(s) when the model has none (single files): a folder with vocab.json + merges.txt */
  tokenizer?: string;
  tokenizer2?: string;
}

export interface GeneratedImage extends RawImage {
  channels: 3;
  toPNG(file?: string): Promise<Buffer>;
}

export interface ProgressInfo { step: number; steps: number; timestep: number; elapsedMs: number }

export interface GenerateOptions {
  prompt: string | string[];
  negativePrompt?: string | string[];
  steps?: number;
  guidance?: number;
  seed?: number;
  /** 'philox' (default; identical on CPU and CUDA) or 'torch-cpu' (PyTorch's CPU generator, diffusers' latents) */
  rng?: 'philox' | 'torch-cpu';
  width?: number;
  height?: number;
  numImages?: number;
  sampler?: SamplerName;
  eta?: number;
  timesteps?: number[];
  preset?: string;
  /** DDIM/Euler timestep spacing (default 'trailing', as Hyper-SD runs) */
  timestepSpacing?: 'trailing' | 'leading' | 'linspace';
  clipSkip?: number;
  /** initial latents NCHW [B, 4, H/8, W/8] (replaces the random draw; multiplied by init_noise_sigma) */
  latents?: Tensor | Float32Array;
  /** image-to-image */
  image?: RawImage | string;
  strength?: number;
  /** SDXL micro-conditioning */
  originalSize?: [number, number];
  cropCoords?: [number, number];
  targetSize?: [number, number];
  /** test hook: the noise tensor a step draws (replaces the generator's draw) */
  noise?: (step: number, shape: number[]) => Tensor | Float32Array;
  onProgress?: (p: ProgressInfo) => void;
  signal?: AbortSignal;
  /** 'image' (default) or 'latent' (skip the VAE) */
  output?: 'image' | 'latent';
}

export interface GenerateResult {
  images: GeneratedImage[];
  latents: Float32Array;
  latentShape: number[];
  timesteps: number[];
  timings: { textMs: number; unetMs: number; vaeMs: number };
}

export class StableDiffusionPipeline {
  readonly kind: 'sd15' | 'sdxl';
  private queue: Promise<unknown> = Promise.resolve();
  readonly lora: LoraManager;

  constructor(readonly model: LoadedModel, readonly tokenizer: CLIPTokenizer, readonly tokenizer2: CLIPTokenizer | null, loraTarget: ReturnType<typeof loraTargetFromModel>) {
    this.kind = model.kind;
    this.lora = new LoraManager({
      unet: model.unet?.params, text_encoder: model.textEncoder?.params, text_encoder_2: model.textEncoder2?.params,
    }, loraTarget, (what, f) => this.serial(what, f));
  }

  get device(): hs.DeviceName {
    this.checkLive('device');
    return this.model.unet!.params.get('conv_in.weight').device;
  }

  /** Loads a LoRA file (kohya or peft naming). mode 'fuse' (default) merges it; 'runtime' applies it per forward. */
  loadLora(file: string, o: { scale?: number; name?: string; mode?: LoraMode } = {}): Promise<LoadedLora> {
    return this.lora.load(file, o);  // queued by the manager (the pipeline's queue)
  }
  unloadLora(name: string): Promise<void> {
    return this.lora.unload(name);
  }
  setLoraScale(name: string, scale: number): Promise<void> {
    return this.lora.setScale(name, scale);
  }

  generate(o: GenerateOptions): Promise<GenerateResult> {
    // an already aborted signal rejects at once, not after the calls queued before it
    if (o?.signal?.aborted) return Promise.reject(abortError(o.signal));
    return this.serial('generate', () => this.run(o));
  }

  /** Frees the model once the calls queued before it have finished; a generate in flight stops at its next step
   * with an Error. Every later call is an Error ("pipeline was disposed"). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const free = () => {
      this.lora.unloadAll();
      this.model.dispose();
    };
    if (this.pending === 0) free();  // nothing queued: at once, as before
    else this.queue = this.queue.then(free, free);
  }

  private disposed = false;
  private pending = 0;  // calls queued or running
  private checkLive(what: string): void {
    if (this.disposed) throw disposedError(what);
  }

  private serial<T>(what: string, f: () => Promise<T>): Promise<T> {
    if (this.disposed) return Promise.reject(disposedError(what));
    this.pending++;
    // each call in an error scope of its own: its syncs throw its ops' errors, not those of code beside it
    const g = () => errorScope(f);
    const p = this.queue.then(g, g).finally(() => { this.pending--; });
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Prompt embeddings for a batch, cond then (when CFG) uncond, concatenated along the batch. */
  /** zeroNegatives (SDXL): the negative embeddings are zeros, as diffusers makes them when negative_prompt is None
   * and force_zeros_for_empty_prompt is set (an explicit '' is encoded like any prompt there). */
  encodePrompt(prompts: string[], negatives: string[] | null, clipSkip = 0, zeroNegatives = false): { embeds: Tensor; pooled: Tensor | null } {
    const m = this.model;
    const te1 = m.textEncoder!;
    const all = negatives ? [...prompts, ...negatives] : prompts;
    const B = all.length;
    return tidy(() => {
      if (this.kind === 'sd15') {
        const r = te1.forward(this.tokenizer.callBatch(all), B, { device: this.device });
        const embeds = clipSkip > 0
          ? finalLn(te1, r.hiddenStates[r.hiddenStates.length - 1 - clipSkip])
          : r.lastHiddenState;
        return { embeds, pooled: null };
      }
      const te2 = m.textEncoder2!;
      // SDXL: force_zeros_for_empty_prompt -> no negative prompt at all gives zero embeddings (diffusers tests
      // negative_prompt is None: an explicit '' had been zeroed too, and only when every image's negative was ''):
      // the encoders then see the prompts alone
      const zeroNeg = negatives && zeroNegatives && (m.configs.model_index?.force_zeros_for_empty_prompt ?? true);
      const enc = zeroNeg ? prompts : all;
      const r1 = te1.forward(this.tokenizer.callBatch(enc), enc.length, { device: this.device });
      const r2 = te2.forward(this.tokenizer2!.callBatch(enc), enc.length, { device: this.device });
      const k = 2 + clipSkip;
      let embeds = ops.concat([r1.hiddenStates[r1.hiddenStates.length - k], r2.hiddenStates[r2.hiddenStates.length - k]], 2);
      let pooled = r2.textEmbeds!;
      if (zeroNeg) {
        const n = prompts.length;
        embeds = ops.concat([embeds, zeros([n, embeds.shape[1], embeds.shape[2]], { device: this.device })], 0);
        pooled = ops.concat([pooled, zeros([n, pooled.shape[1]], { device: this.device })], 0);
      }
      return { embeds, pooled };
    });
  }

  private async run(o: GenerateOptions): Promise<GenerateResult> {
    const m = this.model;
    if (!m.unet || !m.vae || !m.textEncoder) throw new Error('generate: the model needs a unet, a vae and a text encoder');
    checkOptions(o, this.kind, Math.min(m.textEncoder.config.num_hidden_layers, m.textEncoder2?.config.num_hidden_layers ?? Infinity));
    const preset = o.preset ? getPreset(o.preset) : null;
    const prompts = Array.isArray(o.prompt) ? o.prompt : [o.prompt];
    if (prompts.length === 0) throw new Error('generate: prompt is empty');
    const perPrompt = o.numImages ?? 1;
    if (!Number.isInteger(perPrompt) || perPrompt < 1) throw new Error(`generate: numImages must be a positive integer, got ${perPrompt}`);
    const batchPrompts = prompts.flatMap((p) => Array(perPrompt).fill(p) as string[]);
    const B = batchPrompts.length;
    const guidance = o.guidance ?? preset?.guidance ?? (this.kind === 'sdxl' ? 5 : 7.5);
    const cfg = guidance > 1;
    const negs = o.negativePrompt === undefined ? Array(B).fill('') : (Array.isArray(o.negativePrompt) ? o.negativePrompt : [o.negativePrompt]);
    if (negs.length !== 1 && negs.length !== prompts.length && negs.length !== B)
      throw new Error(`generate: ${negs.length} negative prompts for ${prompts.length} prompts (give one, one per prompt, or one per image)`);
    const negatives = cfg ? (negs.length === B ? negs : negs.length === prompts.length ? prompts.flatMap((_, i) => Array(perPrompt).fill(negs[i])) : Array(B).fill(negs[0])) : null;
    const samplerName = o.sampler ?? preset?.sampler ?? 'ddim';
    const steps = o.steps ?? preset?.steps ?? 4;
    const eta = o.eta ?? preset?.eta;
    const timesteps = o.timesteps ?? (o.steps === undefined ? preset?.timesteps : undefined);
    const defaultSize = this.kind === 'sdxl' ? 1024 : 512;
    let width = o.width ?? defaultSize, height = o.height ?? defaultSize;
    let init: RawImage | null = null;
    if (o.image) {
      init = typeof o.image === 'string' ? readPNG(o.image) : o.image;
      if (o.width === undefined) width = init.width;
      if (o.height === undefined) height = init.height;
      if (init.width !== width || init.height !== height) throw new Error(`generate: image is ${init.width}x${init.height} but width/height ask for ${width}x${height}`);
    }
    for (const [k, v] of [['width', width], ['height', height]] as const)
      if (!Number.isInteger(v) || v < 8 || v % 8 !== 0) throw new Error(`generate: ${k} must be a positive multiple of 8, got ${v}`);
    const strength = o.strength ?? (init ? 0.8 : 1);
    if (!(strength > 0 && strength <= 1)) throw new Error(`generate: strength must be in (0, 1], got ${strength}`);
    const sampler = createSampler(samplerName, {
      steps: timesteps ? undefined : steps, timesteps, eta: samplerName === 'ddim' || samplerName === 'tcd' ? eta ?? 0 : undefined,
      config: this.schedulerConfig(samplerName, o.timestepSpacing ?? 'trailing'), strength: init ? strength : 1,
    });
    const plans = sampler.plan();
    const device = this.device;
    const latentC = m.unet.config.in_channels;
    const shape = [B, latentC, height / 8, width / 8];
    const n = shape.reduce((a, b) => a * b, 1);
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
    const rngKind = o.rng ?? 'philox';
    const torchGen = rngKind === 'torch-cpu' ? new TorchCpuGenerator(seed) : null;
    let philoxOffset = 0;
    const draw = (): Tensor => {
      if (torchGen) return tensor(torchGen.randn(n), shape, { device });
      return ops.randn(shape, { seed, offset: philoxOffset++, device });
    };
    let progressError: unknown = null;
    const checkAbort = () => {
      if (o.signal?.aborted) throw abortError(o.signal);
      if (this.disposed) throw new Error('generate: the pipeline was disposed during the run');
      if (progressError) throw progressError;
    };
    const progress = (p: ProgressInfo) => {
      const r = o.onProgress?.(p) as unknown;
      // an async onProgress that rejects stops the run with its error (it had been an unhandled rejection)
      if (r && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, (e) => { progressError ??= e; });
    };
    const t0 = Date.now();
    return tidy(async () => {
      checkAbort();
      const tText = Date.now();
      const { embeds, pooled } = this.encodePrompt(batchPrompts, negatives, o.clipSkip ?? 0, o.negativePrompt === undefined);
      let timeIds: Tensor | null = null;
      if (this.kind === 'sdxl') {
        const orig = o.originalSize ?? [height, width], crop = o.cropCoords ?? [0, 0], tgt = o.targetSize ?? [height, width];
        const row = [...orig, ...crop, ...tgt];
        const rows = cfg ? 2 * B : B;
        timeIds = tensor(Float32Array.from({ length: rows * 6 }, (_, i) => row[i % 6]), [rows, 6], { device });
      }
      await hs.sync(device);
      const textMs = Date.now() - tText;
      // initial latents
      let x: Tensor;
      let z: Tensor | null = null;
      if (init) {
        // diffusers' img2img: the posterior sample (mean + std * eps) is drawn before the noise, from the same
        // generator, so with rng 'torch-cpu' both draws match diffusers'
        const img = imageToTensor(init, device);
        const enc = m.vae!.encode(ops.concat(Array(B).fill(img), 0));
        z = ops.affine(samplePosterior(enc.mean, enc.logvar, draw()), m.vae!.scalingFactor, 0);
      }
      if (o.latents) {
        if (!(o.latents instanceof Tensor) && (o.latents as ArrayLike<number>).length !== n)
          throw new Error(`generate: latents must have ${n} values ([${shape}]), got ${(o.latents as ArrayLike<number>).length}`);
        const l = o.latents instanceof Tensor ? o.latents : tensor(o.latents, shape, { device });
        if (l.size !== n) throw new Error(`generate: latents must be [${shape}], got [${l.shape}]`);
        x = l.reshape(shape);
      } else x = draw();
      if (z) {
        const { a, b } = sampler.addNoiseCoefficients(plans[0].t);
        x = ops.schedulerStep(z, x, null, a, b, 0);
      } else {
        x = ops.affine(x, sampler.initNoiseSigma, 0);
      }
      const tUnet = Date.now();
      for (let i = 0; i < plans.length; i++) {
        checkAbort();
        const p = plans[i];
        x = this.step(x, p, i, embeds, pooled, timeIds, guidance, cfg, o, draw);
        await hs.sync(device);
        progress({ step: i + 1, steps: plans.length, timestep: p.t, elapsedMs: Date.now() - t0 });
      }
      const unetMs = Date.now() - tUnet;
      checkAbort();
      const latents = (await x.data()) as Float32Array;
      const tVae = Date.now();
      const images: GeneratedImage[] = [];
      if ((o.output ?? 'image') === 'image') {
        const dec = m.vae!.decode(ops.affine(x, 1 / m.vae!.scalingFactor, 0));
        const rgb = await tensorToImages(dec);
        images.push(...rgb);
      }
      const vaeMs = Date.now() - tVae;
      return { images, latents, latentShape: shape, timesteps: plans.map((p) => p.t), timings: { textMs, unetMs, vaeMs } };
    });
  }

  /** The model's scheduler_config.json read for the chosen sampler (diffusers from_config semantics). Hyper-SD runs
   * trailing spacing and no x0 clipping (clipping is not a linear step). */
  private schedulerConfig(name: SamplerName, spacing: 'trailing' | 'leading' | 'linspace'): SchedulerConfig {
    const sch = this.model.configs.scheduler as Record<string, unknown> | undefined;
    const over: SchedulerConfig = { timestep_spacing: spacing, clip_sample: false };
    return sch ? samplerConfigFromDiffusers(sch, name, over).config : over;
  }

  private step(x: Tensor, p: StepPlan, i: number, embeds: Tensor, pooled: Tensor | null, timeIds: Tensor | null,
    guidance: number, cfg: boolean, o: GenerateOptions, draw: () => Tensor): Tensor {
    return tidy(() => {
      const B = x.shape[0];
      const xin = ops.affine(x, p.inputScale, 0);
      const unetIn = cfg ? ops.concat([xin, xin], 0) : xin;
      const eps2 = this.model.unet!.forward({
        sample: unetIn, timesteps: p.t, encoderHiddenStates: embeds,
        textEmbeds: pooled ?? undefined, timeIds: timeIds ?? undefined,
      });
      let eps = eps2;
      if (cfg) {
        const cond = ops.slice(eps2, 0, 0, B), uncond = ops.slice(eps2, 0, B, B);
        // uncond + g * (cond - uncond)
        eps = ops.schedulerStep(uncond, ops.sub(cond, uncond), null, 1, guidance, 0);
      }
      let noise: Tensor | null = null;
      if (p.noise) {
        const hook = o.noise?.(i, [...x.shape]) as unknown;
        if (hook !== undefined && hook !== null && !(hook instanceof Tensor) && !(hook instanceof Float32Array))
          throw new Error(`generate: the noise hook must return a Tensor, a Float32Array or nothing, got ${typeof hook === 'object' ? (hook as object).constructor?.name ?? 'an object' : typeof hook} at step ${i}`);
        if (hook instanceof Float32Array && hook.length !== x.size)
          throw new Error(`generate: the noise hook returned ${hook.length} values at step ${i}; [${x.shape}] needs ${x.size}`);
        noise = hook ? (hook instanceof Tensor ? hook : tensor(hook, x.shape, { device: x.device })) : draw();
        if (p.drawsUnused) noise = null;
      }
      return ops.schedulerStep(x, eps, noise, p.a, p.b, p.c);
    });
  }
}

const disposedError = (what: string) => new Error(`${what}: the pipeline was disposed`);

function abortError(signal: AbortSignal): Error {
  const e = Object.assign(new Error('generate: aborted'), { name: 'AbortError' });
  if (signal.reason !== undefined) (e as Error & { cause?: unknown }).cause = signal.reason;
  return e;
}

/** The options the sampler and the model do not check themselves, checked before any work: a wrong type or a
 * non-finite number had silently given an all-NaN image or fallen back to a default (session 28, found by
 * probing). `layers`: the text encoders' (smaller) depth, which bounds clipSkip. */
function checkOptions(o: GenerateOptions, kind: 'sd15' | 'sdxl', layers: number): void {
  const bad = (what: string, want: string, v: unknown) => new Error(`generate: ${what} must be ${want}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
  if (typeof o !== 'object' || o === null) throw new Error('generate: options must be an object');
  const strings = (v: unknown) => typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
  if (!strings(o.prompt)) throw bad('prompt', 'a string or an array of strings', o.prompt);
  if (o.negativePrompt !== undefined && !strings(o.negativePrompt)) throw bad('negativePrompt', 'a string or an array of strings', o.negativePrompt);
  if (o.guidance !== undefined && !(typeof o.guidance === 'number' && Number.isFinite(o.guidance) && o.guidance >= 0))
    throw bad('guidance', 'a finite number >= 0 (classifier-free guidance runs above 1)', o.guidance);
  if (o.seed !== undefined && !(Number.isSafeInteger(o.seed) && o.seed >= 0)) throw bad('seed', 'an integer from 0 to 2^53 - 1', o.seed);
  if (o.rng !== undefined && o.rng !== 'philox' && o.rng !== 'torch-cpu') throw bad('rng', "'philox' or 'torch-cpu'", o.rng);
  if (o.output !== undefined && o.output !== 'image' && o.output !== 'latent') throw bad('output', "'image' or 'latent'", o.output);
  if (o.signal !== undefined && typeof (o.signal as { aborted?: unknown })?.aborted !== 'boolean') throw bad('signal', 'an AbortSignal', o.signal);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw bad('onProgress', 'a function', o.onProgress);
  if (o.noise !== undefined && typeof o.noise !== 'function') throw bad('noise', 'a function', o.noise);
  // clipSkip k takes the hidden state k layers before the last (SDXL: before the penultimate)
  const maxSkip = kind === 'sdxl' ? layers - 2 : layers - 1;
  if (o.clipSkip !== undefined && !(Number.isInteger(o.clipSkip) && o.clipSkip >= 0 && o.clipSkip <= maxSkip))
    throw bad('clipSkip', `an integer from 0 to ${maxSkip} for this model's text encoder${kind === 'sdxl' ? 's' : ''}`, o.clipSkip);
  for (const k of ['originalSize', 'cropCoords', 'targetSize'] as const) {
    const v = o[k];
    if (v === undefined) continue;
    if (kind !== 'sdxl') throw new Error(`generate: ${k} is SDXL micro-conditioning; this is an SD1.5 model`);
    if (!(Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0)))
      throw bad(k, 'two finite numbers >= 0 ([height, width] / [top, left])', Array.isArray(v) ? `[${v.join(', ')}]` : v);
  }
  if (o.image !== undefined && typeof o.image !== 'string') {
    const im = o.image as Partial<RawImage>;
    if (!(Number.isInteger(im?.width) && im.width! > 0 && Number.isInteger(im.height) && im.height! > 0))
      throw new Error(`generate: image must be a PNG path or { width, height, channels, data } with positive integer sizes, got ${im?.width}x${im?.height}`);
    if (im.channels !== 1 && im.channels !== 3 && im.channels !== 4) throw bad('image.channels', '1, 3 or 4', im.channels);
    if (!(im.data instanceof Uint8Array) || im.data.length !== im.width! * im.height! * im.channels)
      throw new Error(`generate: image.data must be a Uint8Array of ${im.width}x${im.height}x${im.channels} = ${im.width! * im.height! * im.channels} bytes, got ${im.data instanceof Uint8Array ? im.data.length + ' bytes' : typeof im.data}`);
  }
}

function finalLn(te: NonNullable<LoadedModel['textEncoder']>, h: Tensor): Tensor {
  const p = te.params;
  return ops.layerNorm(h, p.get('text_model.final_layer_norm.weight'), p.get('text_model.final_layer_norm.bias'), te.config.layer_norm_eps ?? 1e-5);
}

/** RGB u8 image -> NCHW [1, 3, H, W] in [-1, 1]. */
/** A sample of the VAE's diagonal Gaussian posterior: mean + exp(logvar / 2) * eps, logvar clamped to [-30, 20]
 * as diffusers' DiagonalGaussianDistribution does. */
export function samplePosterior(mean: Tensor, logvar: Tensor, eps: Tensor): Tensor {
  return tidy(() => ops.add(mean, ops.mul(exp(ops.affine(ops.clamp(logvar, -30, 20), 0.5, 0)), eps)));
}

export function imageToTensor(img: RawImage, device: hs.DeviceName): Tensor {
  const { width: W, height: H } = img;
  const out = new Float32Array(3 * H * W);
  for (let i = 0; i < H * W; i++)
    for (let c = 0; c < 3; c++) out[c * H * W + i] = (img.data[i * img.channels + (img.channels === 1 ? 0 : c)] / 255) * 2 - 1;
  return tensor(out, [1, 3, H, W], { device });
}

/** NCHW [B, 3, H, W] decoded image -> RGB bytes per image: round(clamp(x/2 + 0.5, 0, 1) * 255). */
export async function tensorToImages(dec: Tensor): Promise<GeneratedImage[]> {
  const [B, C, H, W] = dec.shape;
  const v = (await tidy(() => ops.permute(ops.clamp(ops.affine(dec, 0.5, 0.5), 0, 1), [0, 2, 3, 1])).data()) as Float32Array;
  const imgs: GeneratedImage[] = [];
  for (let b = 0; b < B; b++) {
    const data = new Uint8Array(H * W * 3);
    for (let i = 0; i < H * W; i++) for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.round(v[(b * H * W + i) * C + c] * 255);
    imgs.push(makeImage(W, H, data));
  }
  return imgs;
}

export function makeImage(width: number, height: number, data: Uint8Array): GeneratedImage {
  const img: GeneratedImage = {
    width, height, channels: 3, data,
    async toPNG(file?: string) {
      const png = encodePNG(img);
      if (file) await fs.promises.writeFile(file, png);
      return png;
    },
  };
  return img;
}

/**
 * A tokenizer for one slot: the model's own folder when it holds the vocabulary; otherwise the vocabulary from
 * `vocabDir` (vocab.json + merges.txt) with the pad token the model's folder configures (SDXL tokenizer_2: "!").
 */
function tokenizerFor(modelDir: string | undefined, vocabDir: string | undefined, defaultPad: string, modelPath: string): CLIPTokenizer {
  const has = (d?: string) => !!d && fs.existsSync(path.join(d, 'vocab.json')) && fs.existsSync(path.join(d, 'merges.txt'));
  if (has(modelDir) && !vocabDir) return CLIPTokenizer.fromFolder(modelDir!);
  const src = has(vocabDir) ? vocabDir! : has(modelDir) ? modelDir! : null;
  if (!src)
    throw new Error(`${modelPath}: no CLIP vocabulary (vocab.json + merges.txt) in the model${vocabDir ? ` or in ${vocabDir}` : ''}; pass tokenizer: <folder with vocab.json and merges.txt>`);
  let pad = defaultPad;
  for (const f of ['special_tokens_map.json', 'tokenizer_config.json']) {
    const file = modelDir ? path.join(modelDir, f) : '';
    if (!file || !fs.existsSync(file)) continue;
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { pad_token?: string | { content?: string } };
    const pt = typeof j.pad_token === 'string' ? j.pad_token : j.pad_token?.content;
    if (pt) {
      pad = pt;
      break;
    }
  }
  return CLIPTokenizer.fromFiles(path.join(src, 'vocab.json'), path.join(src, 'merges.txt'), { padToken: pad });
}

/** Loads a model (diffusers folder, prefixed file or single-file checkpoint) and its tokenizers. */
export async function loadPipeline(modelPath: string, opts: PipelineOptions = {}): Promise<StableDiffusionPipeline> {
  const device = hs.resolveDevice(opts.device ?? 'auto');
  const target = (() => {
    const om = openModel(modelPath, opts);
    try {
      return loraTargetFromModel(om);
    } finally {
      om.close();
    }
  })();
  const model = loadModel(modelPath, { ...opts, device });
  try {
    // every component generate needs (a missing text_encoder_2 had surfaced at generate as a TypeError)
    const need: [unknown, string][] = [[model.unet, 'unet'], [model.vae, 'vae'], [model.textEncoder, 'text_encoder'],
      ...(model.kind === 'sdxl' ? [[model.textEncoder2, 'text_encoder_2'] as [unknown, string]] : [])];
    const missing = need.filter(([x]) => !x).map(([, n]) => n);
    if (missing.length) throw new Error(`${modelPath}: a ${model.kind} pipeline needs ${missing.join(', ')}, which ${missing.length > 1 ? 'were' : 'was'} not loaded`);
    const tok = tokenizerFor(model.tokenizerDirs.tokenizer, opts.tokenizer, '<|endoftext|>', modelPath);
    const tok2 = model.kind === 'sdxl'
      ? tokenizerFor(model.tokenizerDirs.tokenizer_2, opts.tokenizer2 ?? opts.tokenizer, '!', modelPath)
      : null;
    return new StableDiffusionPipeline(model, tok, tok2, target);
  } catch (e) {
    model.dispose();
    throw e;
  }
}

