/**
 * hypersd: Hyper-SD few-step Stable Diffusion (SD1.5 / SDXL) for Node.js, on a native core of hand-written
 * CPU and CUDA kernels. See README.md.
 */
export {
  Tensor, tensor, empty, full, zeros, ones, tidy, keep, memory, emptyCache, resetPeakMemory, sync, setDevice, getDevice, resolveDevice,
  cudaStatus, setThreads, threads, setPoison,
} from './tensor';
export type { DType, DeviceName, DeviceSetting, TensorOptions, MemoryInfo } from './tensor';
export { errorScope } from './native';
export * as ops from './ops';
export * as autograd from './autograd';
export * as train from './train';
export { runOp } from './ops/runtime';
export { loadPipeline, StableDiffusionPipeline, samplePosterior } from './pipelines/sd';
export type { GenerateOptions, GenerateResult, GeneratedImage, PipelineOptions, ProgressInfo } from './pipelines/sd';
export { PRESETS } from './pipelines/presets';
export { loadModel } from './models/load';
export { UNet2DConditionModel } from './models/unet';
export { CLIPTextModel } from './models/clip';
export { AutoencoderKL } from './models/vae';
export { CLIPTokenizer } from './models/clip_tokenizer';
export { SafeTensors, saveSafetensors } from './io/safetensors';
export { openModel } from './io/model_files';
export { encodePNG, decodePNG, readPNG, writePNG } from './io/png';
export { createSampler, SAMPLER_NAMES } from './schedulers';
export { TorchCpuGenerator } from './random/torch_cpu';
