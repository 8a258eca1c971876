/** Typed op functions, one module per op family (mirrors native/cpu and native/cuda). */
export * from './gemm';
export * from './conv';
export * from './attention';
export * from './norm';
export * from './activation';
export * from './elementwise';
export * from './shape';
export * from './embedding';
export * from './random';
export * from './unary';
export * from './optim';
export { runOp } from './runtime';
