/**
 * The buffers a file is written through (staged-file.ts): page-aligned, so that a full one can go
 * to disk with O_DIRECT, straight from this memory, without the kernel's copy into the page cache
 * (on this machine's virtio disk that copy was a third of an import's CPU, and buffered writes
 * plus fsync ran at 400 MB/s where direct ones ran at 1.3 GB/s); and shared, so that a worker
 * thread can hash a stage while it is written (hash-worker.ts). No ArrayBuffer promises an aligned
 * start; a WebAssembly.Memory's does, being pages of its own. One memory holds STAGES of them,
 * reused file after file: enough for the packer's 8 downloads, its bundle file and its read-back to
 * have two each. A stage once used stays in memory, so a process holds at most 96 MiB of them; a
 * file that finds none free uses memory of its own (staged-file.ts).
 */
export const STAGE_BYTES = 4 << 20;
/** What O_DIRECT needs: offsets, lengths and addresses in whole logical blocks (4 KiB covers every disk). */
export const DIRECT_ALIGN = 4096;
const STAGES = 24;
const WASM_PAGE = 64 << 10;

let memory: SharedArrayBuffer | undefined;
const free: Buffer[] = [];

/** The memory every stage is in (made on first use). */
export function stageMemory(): SharedArrayBuffer {
  if (!memory) {
    const pages = (STAGES * STAGE_BYTES) / WASM_PAGE;
    memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer as unknown as SharedArrayBuffer;
    for (let i = 0; i < STAGES; i++) free.push(Buffer.from(memory, i * STAGE_BYTES, STAGE_BYTES));
  }
  return memory;
}

/** A free stage, or undefined when every one is taken. */
export function takeStage(): Buffer | undefined {
  stageMemory();
  return free.pop();
}

export function giveStage(stage: Buffer): void {
  if (stage.buffer === memory) free.push(stage);
}

/**
 * Copies `src` to the start of `dst` (at least as long) at memcpy's speed. Into shared memory,
 * V8's copies (`set`, `Buffer#copy`) go word by word, as relaxed atomics: on this machine that was
 * a tenth of a bundle run's CPU. Node's `fill` with a pattern as long as the range is one memcpy.
 */
export function copyInto(dst: Buffer, src: Uint8Array): void {
  if (src.length > 0) dst.fill(src, 0, src.length);
}

/** Whether `bytes` start on a block of the stages' memory: whole blocks of it may be written with O_DIRECT. */
export function isAligned(bytes: Buffer): boolean {
  return bytes.buffer === memory && bytes.byteOffset % DIRECT_ALIGN === 0;
}
