// The ES module entry point: the CommonJS build's one instance (one addon, one registry of mounts), exported by name.
export * from './index.js';
