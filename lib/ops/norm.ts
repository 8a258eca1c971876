// norm op wrappers (see native/include/hypersd/OPS.md).
export {};
