export * from './tensor';
export * from './dtype';
