/**
 * The buffers a blob writer gathers bytes in before it writes them: page-aligned, so that a full
 * one can go to disk with O_DIRECT, straight from this memory, without the kernel's copy into the
 * page cache (on this machine's virtio disk that copy was a third of an import's CPU, and buffered
 * writes plus fsync ran at 400 MB/s where direct ones ran at 1.3 GB/s). No ArrayBuffer promises an
 * aligned start; a WebAssembly.Memory's does, being pages of its own. One memory holds STAGES of
 * them, reused writer after writer; past those (many writers at once) a stage is plain memory,
 * written through the page cache.
 */
export const STAGE_BYTES = 4 << 20;
/** What O_DIRECT needs: offsets, lengths and addresses in whole logical blocks (4 KiB covers every disk). */
export const DIRECT_ALIGN = 4096;
const STAGES = 8;
const WASM_PAGE = 64 << 10;

let memory: ArrayBuffer | undefined;
const free: Buffer[] = [];

export function takeStage(): Buffer {
  if (!memory) {
    memory = new WebAssembly.Memory({ initial: (STAGES * STAGE_BYTES) / WASM_PAGE }).buffer;
    for (let i = 0; i < STAGES; i++) free.push(Buffer.from(memory, i * STAGE_BYTES, STAGE_BYTES));
  }
  return free.pop() ?? Buffer.allocUnsafeSlow(STAGE_BYTES);
}

export function giveStage(stage: Buffer): void {
  if (isAligned(stage)) free.push(stage);
}

/** Whether `bytes` start on a page of the stages' memory: a full stage may then be written with O_DIRECT. */
export function isAligned(bytes: Buffer): boolean {
  return bytes.buffer === memory && bytes.byteOffset % DIRECT_ALIGN === 0;
}
