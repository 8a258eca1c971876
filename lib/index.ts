/**
 * hypersd: Hyper-SD few-step Stable Diffusion (SD1.5 / SDXL) for Node.js, on a native core of hand-written
 * CPU and CUDA kernels. See README.md.
 */
export {
  Tensor, tensor, empty, full, zeros, ones, tidy, keep, memory, sync, setDevice, getDevice, resolveDevice,
  cudaStatus, setThreads, threads, setPoison,
} from './tensor';
export type { DType, DeviceName, DeviceSetting, TensorOptions, MemoryInfo } from './tensor';
export * as ops from './ops';
export { runOp } from './ops/runtime';
