// A plain in-memory model of the filesystem's namespace, sizes and bytes, with the same error rules, for property and crash tests.
export type Node = { kind: 'dir' } | { kind: 'file'; type: 'plain' | 'state' | 'guest'; data: Uint8Array };

export class Model {
  readonly nodes = new Map<string, Node>([['/', { kind: 'dir' }]]);
  /** Set between serialise and abort: metadata changes fail with EBUSY. */
  frozen = false;
  /** Free blocks quarantined (never allocated again): the capacity is that many blocks smaller. */
  quarantined = 0;

  constructor(
    /** Blocks files may use; a resize of the pool changes it. */
    public dataBlocks: number,
    readonly inodes: number,
    readonly blockSize: number,
  ) {}

  clone(): Model {
    const copy = new Model(this.dataBlocks, this.inodes, this.blockSize);
    copy.nodes.clear();
    for (const [key, node] of this.nodes) copy.nodes.set(key, node.kind === 'dir' ? node : { ...node, data: node.data.slice() });
    copy.frozen = this.frozen;
    copy.quarantined = this.quarantined;
    return copy;
  }

  #writable(): void {
    if (this.frozen) throw code('EBUSY');
  }

  freeBlocks(): number {
    return this.dataBlocks - this.quarantined - this.usedBlocks();
  }

  /** Quarantines a free block, if there is one: the pool holds one block less from now on. */
  quarantineFree(): void {
    this.#writable();
    if (this.freeBlocks() > 0) this.quarantined++;
  }

  /**
   * Resizes the pool to `blocks` blocks in all, `metadataBlocks` of them metadata, within its capacity; a shrink is
   * refused while a block past the new end is in use (`tailInUse`, read from the files' extents and the bad-block list).
   */
  resizePool(blocks: number, limits: { metadataBlocks: number; maxBlocks: number; tailInUse: boolean }): void {
    this.#writable();
    if (blocks > limits.maxBlocks) throw code('EFBIG');
    if (blocks <= limits.metadataBlocks) throw code('EINVAL');
    if (limits.tailInUse) throw code('EBUSY');
    this.dataBlocks = blocks - limits.metadataBlocks;
  }

  usedBlocks(): number {
    let used = 0;
    for (const node of this.nodes.values()) if (node.kind === 'file') used += Math.ceil(node.data.length / this.blockSize);
    return used;
  }

  /** Resolves like the filesystem: ENOTDIR when a file is crossed, ENOENT when a name is missing. */
  resolve(path: string): string {
    const parts = path.split('/').filter(Boolean);
    let current = '/';
    for (const part of parts) {
      if (this.nodes.get(current)!.kind !== 'dir') throw code('ENOTDIR');
      const next = current === '/' ? `/${part}` : `${current}/${part}`;
      if (!this.nodes.has(next)) throw code('ENOENT');
      current = next;
    }
    return current;
  }

  parentOf(path: string): string {
    const parent = path.slice(0, path.lastIndexOf('/')) || '/';
    if (this.nodes.get(this.resolve(parent))!.kind !== 'dir') throw code('ENOTDIR');
    return parent;
  }

  children(dir: string): string[] {
    const prefix = dir === '/' ? '/' : `${dir}/`;
    return [...this.nodes.keys()].filter((key) => key !== dir && key.startsWith(prefix) && !key.slice(prefix.length).includes('/'));
  }

  create(path: string, node: Node): void {
    this.#writable();
    this.parentOf(path);
    if (this.nodes.has(path)) throw code('EEXIST');
    if (this.nodes.size >= this.inodes) throw code('ENOSPC');
    this.nodes.set(path, node);
  }

  removeFile(path: string): void {
    this.#writable();
    this.parentOf(path);
    const node = this.nodes.get(path);
    if (!node) throw code('ENOENT');
    if (node.kind === 'dir') throw code('EISDIR');
    this.nodes.delete(path);
  }

  removeDir(path: string): void {
    this.#writable();
    this.parentOf(path);
    const node = this.nodes.get(path);
    if (!node) throw code('ENOENT');
    if (node.kind !== 'dir') throw code('ENOTDIR');
    if (this.children(path).length > 0) throw code('ENOTEMPTY');
    this.nodes.delete(path);
  }

  rename(from: string, to: string): void {
    this.#writable();
    this.parentOf(from);
    const node = this.nodes.get(from);
    if (!node) throw code('ENOENT');
    this.parentOf(to);
    if (from === to) return;
    if (node.kind === 'dir' && (to + '/').startsWith(from + '/')) throw code('EINVAL');
    const victim = this.nodes.get(to);
    if (victim) {
      if (node.kind === 'dir' && victim.kind !== 'dir') throw code('ENOTDIR');
      if (node.kind !== 'dir' && victim.kind === 'dir') throw code('EISDIR');
      if (victim.kind === 'dir' && this.children(to).length > 0) throw code('ENOTEMPTY');
      this.nodes.delete(to);
    }
    const moved = [...this.nodes.entries()].filter(([key]) => key === from || key.startsWith(`${from}/`));
    for (const [key] of moved) this.nodes.delete(key);
    for (const [key, value] of moved) this.nodes.set(to + key.slice(from.length), value);
  }

  file(path: string): Node & { kind: 'file' } {
    const node = this.nodes.get(this.resolve(path))!;
    if (node.kind !== 'file') throw code('EISDIR');
    return node;
  }

  resize(path: string, size: number): void {
    this.#writable();
    const node = this.file(path);
    const extra = Math.ceil(size / this.blockSize) - Math.ceil(node.data.length / this.blockSize);
    if (extra > 0 && extra > this.freeBlocks()) throw code('ENOSPC');
    const data = new Uint8Array(size);
    data.set(node.data.subarray(0, Math.min(size, node.data.length)));
    node.data = data;
  }

  write(path: string, position: number, bytes: Uint8Array): void {
    this.#writable();
    const node = this.file(path);
    if (node.type === 'guest') throw code('EPERM');
    if (position + bytes.length > node.data.length) this.resize(path, position + bytes.length);
    node.data.set(bytes, position);
  }
}

export function code(value: string): Error & { code: string } {
  return Object.assign(new Error(value), { code: value });
}

/** Guest memory written through a mapping: not metadata, so allowed while frozen; EINVAL while the file is empty. */
export function signGuest(model: Model, path: string, bytes: Uint8Array): void {
  const node = model.file(path);
  if (node.data.length === 0) throw code('EINVAL');
  node.data.set(bytes.subarray(0, Math.min(bytes.length, node.data.length)), 0);
}
