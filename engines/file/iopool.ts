/**
 * I/O threads: file reads (backup) and small-file writes (restore) off the
 * main thread, so a cold device gets several requests in flight while the main
 * thread walks, chunks, hashes, or loads blobs.
 *
 * Each worker does plain synchronous open/pread/close (a few microseconds of
 * CPU per file, unlike the libuv pool's per-request thread hand-offs) and
 * answers a whole batch of small files in ONE lent buffer, so 100k
 * small files cost a few thousand messages. Large files are read in blocks
 * (one request per block, a few blocks ahead of the chunker).
 *
 * Restore sends batches of small files (content back to back in one
 * lent buffer, with their metadata); each thread creates, writes,
 * chowns, chmods and stamps them with plain synchronous calls.
 *
 * Measured on this project's 2-core VM, 100k small files with a cold page
 * cache: 34 s with synchronous reads on the main thread, 15 s with the libuv
 * pool (8 concurrent requests), 5–7 s with 4–8 reader threads.
 *
 * Buffers are the main thread's, lent to a thread per request as shared
 * buffers named by number (see SharedBufferPool: transfers cost a full GC
 * every 64 MiB moved).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { SLAB_SOURCE, SharedBufferPool } from '../../src/util/buffers.js';
import { DECODER_SOURCE, INTEGRITY_PREFIX, type BlobCodec, type StoredRef } from '../../src/repository/decode.js';
import { blake3Path } from '../../src/util/blake3.js';
import { constants as osConstants } from 'node:os';
import { addonPath, copyInto } from '../../src/util/native.js';
import { CHUNKER_SOURCE, gearTable, type ChunkerOptions } from './chunker.js';

/** Result of one small-file batch: all contents back to back; per file the bytes read, or an error code. */
export interface BatchResult {
  buf: Buffer;
  /** Offset of each file's bytes in `buf` (its slot is `sizes[i]` long). */
  offsets: number[];
  /** Bytes read per file, or -1 when it failed (see `errors`). */
  lens: number[];
  errors: (string | null)[];
  /** With hashing: each file's blob ID (null when empty or failed). */
  ids?: (string | null)[];
}

/** Result of one block read. */
export interface BlockResult {
  buf: Buffer;
  /** An error code (ENOENT, EIO, ECHANGED: not a regular file any more) or null. */
  error: string | null;
}

/** Blocks of a large file with its chunks cut and hashed on a reader thread (see IoPool.chunkedReader). */
export interface ChunkedBlock extends BlockResult {
  /** End offsets (in `buf`) of the chunks that end in this block; the last block ends the file's last chunk. */
  cuts: number[];
  /** Blob ID of each of those chunks, or null for an all-zero chunk of a sparse file (a hole). */
  ids: (string | null)[];
}

/** Reads one large file block by block on one thread, which cuts and hashes its chunks. */
export interface ChunkedReader {
  read(offset: number, length: number): Promise<ChunkedBlock>;
  /** Forget the file's chunker state on the thread (after an error or a shrink; harmless after the last block). */
  close(): void;
}

/** What the reader threads need to cut and hash chunks as the main thread would. */
export interface ChunkHashing {
  /** The repository's chunk-ID key (keyed BLAKE3). */
  hashKey: Buffer;
  chunker: Required<ChunkerOptions>;
}

/** Threads that write large files (see fileWriter). */
const LARGE_THREADS = 2;
/** Young-generation cap of an I/O thread's V8 heap (MiB). */
const WORKER_YOUNG_MB = 2;
/** Numbers per file in a write message. */
const WRITE_FIELDS = 14;
/** The process's umask (its threads create files under it); read without setting it. */
const UMASK = ((): number => {
  try {
    const m = /^Umask:\s*([0-7]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1]!, 8);
  } catch {
    /* below */
  }
  return 0o777; // unknown: never rely on it (every file gets its fchmod)
})();
/** errno → code, for errors of the addon in the threads. */
const ERRNO_NAMES = Object.fromEntries(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
${DECODER_SOURCE}
const fs = require('node:fs');
const addon = workerData.addonPath ? require(workerData.addonPath) : null;
const errnoNames = workerData.errnoNames;
const flags = workerData.flags;
// Chunking and hashing (backup): the same chunker and keyed BLAKE3 as the main thread.
const __name = (f) => f;
const hashing = workerData.hashing;
const GEAR = hashing ? new Int32Array(hashing.gear) : undefined;
${CHUNKER_SOURCE}
const Blake3Hasher = hashing ? require(hashing.blakePath).Blake3Hasher : undefined;
const hashKey = hashing ? Buffer.from(hashing.key) : undefined;
let oneHasher;
function blobId(u8) {
  if (oneHasher === undefined) oneHasher = Blake3Hasher.newKeyed(hashKey); else oneHasher.reset();
  return oneHasher.update(Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.length)).digest('hex');
}
function allZero(b) {
  return zeroRunEnd(b, 0, b.length) === b.length;
}
/**
 * Read m.length bytes at m.offset of m.path into m.buf (check: it must still be a regular file);
 * returns the count. With m.sparse and the addon, a block that lies in a hole (SEEK_DATA says
 * the next data starts after it) is zeros without a read, so the kernel neither zeroes
 * page-cache pages for it nor copies them (a 1 GiB file with 4 MiB of data costs 4 MiB of reads).
 */
function readBlock(m, check) {
  const fd = fs.openSync(m.path, flags);
  try {
    const holes = m.sparse === true && addon !== null;
    const st = check || holes ? fs.fstatSync(fd) : undefined;
    if (check && !st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ECHANGED' });
    const u8 = new Uint8Array(m.buf);
    if (holes) {
      const data = addon.seekData(fd, m.offset);
      if (data === -1 || data >= m.offset + m.length) {
        const n = Math.max(0, Math.min(m.length, st.size - m.offset));
        addon.zero(u8.subarray(0, n));
        return n;
      }
    }
    return readInto(fd, u8, 0, m.length, m.offset);
  } finally {
    try { fs.closeSync(fd); } catch {}
  }
}
/** Chunker state of the large files being read, by token. */
const chunked = new Map();
function chunkedBlock(m) {
  let st = chunked.get(m.token);
  if (st === undefined) {
    // A block read ahead after the file ended short: nobody waits for it.
    if (m.offset !== 0) return { n: 0, error: 'ECHANGED' };
    st = { chunker: new Chunker(hashing.chunker), hasher: Blake3Hasher.newKeyed(hashKey), pend: false, zero: true };
    chunked.set(m.token, st);
  }
  let n;
  try {
    n = readBlock(m, m.offset === 0);
  } catch (e) {
    chunked.delete(m.token);
    return { n: 0, error: e && e.code ? e.code : String(e && e.message || e) };
  }
  const b = Buffer.from(m.buf, 0, n);
  // The block that reaches the recorded size (or ends short) ends the last chunk.
  const last = n < m.length || m.offset + n >= m.size;
  const cuts = [];
  const ids = [];
  const complete = (part, cut) => {
    const zero = m.sparse && st.zero && allZero(part);
    let id = null;
    if (!zero) id = st.pend ? st.hasher.update(part).digest('hex') : blobId(part);
    if (st.pend) st.hasher.reset();
    st.pend = false;
    st.zero = true;
    cuts.push(cut);
    ids.push(id);
  };
  let s = 0;
  while (s < n) {
    let cut = st.chunker.scan(b, s, n);
    if (cut < 0) {
      if (!last) {
        const part = b.subarray(s);
        if (m.sparse && st.zero) st.zero = allZero(part);
        st.hasher.update(part);
        st.pend = true;
        break;
      }
      cut = n;
    }
    complete(b.subarray(s, cut), cut);
    s = cut;
  }
  if (last) {
    if (st.pend) complete(b.subarray(n, n), n);
    chunked.delete(m.token);
  }
  return { n, error: null, cuts, ids, last };
}
function readInto(fd, u8, off, len, pos) {
  let n = 0;
  while (n < len) {
    const r = fs.readSync(fd, u8, off + n, len - n, pos + n);
    if (r === 0) break;
    n += r;
  }
  return n;
}
const C = fs.constants;
const ZERO = Buffer.alloc(4096);
function writeAll(fd, u8, off, len, pos) {
  while (len > 0) {
    const n = fs.writeSync(fd, u8, off, len, pos);
    off += n; len -= n; pos += n;
  }
}
/** Write data at pos (all-zero 4 KiB blocks skipped when sparse); returns the end of what was written. */
function writeData(fd, data, pos, sparse) {
  if (!sparse) {
    writeAll(fd, data, 0, data.length, pos);
    return data.length > 0 ? pos + data.length : 0;
  }
  let end = 0;
  let run = -1;
  for (let o = 0; o < data.length; o += 4096) {
    const n = Math.min(4096, data.length - o);
    const zero = Buffer.compare(data.subarray(o, o + n), n === 4096 ? ZERO : ZERO.subarray(0, n)) === 0;
    if (zero) {
      if (run >= 0) { writeAll(fd, data, run, o - run, pos + run); end = pos + o; run = -1; }
    } else if (run < 0) run = o;
  }
  if (run >= 0) { writeAll(fd, data, run, data.length - run, pos + run); end = pos + data.length; }
  return end;
}
const EUID = process.geteuid ? process.geteuid() : -1;
const EGID = process.getegid ? process.getegid() : -1;
const UMASK = workerData.umask;
function writeOne(f, data) {
  const flags = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
  // A file that is to be ours (owner and group) is created with its final permissions where
  // the umask keeps them: no fchown, no fchmod (two syscalls of six per small file). Others
  // are created 0600 and get owner, then mode (chown clears set-id bits).
  const perm = f.mode & 0o777;
  const owned = !f.chown || (f.uid === EUID && f.gid === EGID);
  const direct = owned && perm === f.mode && (perm & ~UMASK) === perm;
  const createMode = direct ? perm : 0o600;
  let fd;
  try {
    fd = fs.openSync(f.path, flags, createMode);
  } catch (e) {
    if (!e || e.code !== 'EEXIST' || !f.overwrite) throw e;
    const st = fs.lstatSync(f.path);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    fs.unlinkSync(f.path);
    fd = fs.openSync(f.path, flags, createMode);
  }
  try {
    const end = writeData(fd, data, 0, f.sparse);
    if (end < f.size) fs.ftruncateSync(fd, f.size);
    if (!owned) fs.fchownSync(fd, f.uid, f.gid);
    if (!direct) fs.fchmodSync(fd, f.mode);
    if (addon) {
      const rc = addon.setTimes(fd, f.atime, f.atimeNs, f.mtime, f.mtimeNs, false);
      if (rc !== 0) throw Object.assign(new Error('futimens: errno ' + rc), { code: errnoNames[rc] || 'E' + rc });
    } else fs.futimesSync(fd, f.atime + f.atimeNs / 1e9, f.mtime + f.mtimeNs / 1e9);
  } finally {
    fs.closeSync(fd);
  }
}
const decode = workerData.codec ? makeBlobDecoder(workerData.codec) : undefined;
let plain = Buffer.alloc(0);
function plainFor(n) {
  if (plain.length < n) plain = Buffer.allocUnsafeSlow(Math.max(n, 1 << 20));
  return plain;
}
// ---- large files: chunks in file order, written with O_DIRECT where the filesystem takes it
// (no copy into the page cache: buffered writes of new pages cost more CPU here than decoding).
// Direct writes need block-aligned memory, file offsets and lengths: the decoded chunk is
// placed after the unaligned tail of the previous one in an aligned scratch buffer, the aligned
// part is written, the new tail (< 4 KiB) kept for the next chunk or written buffered at the end.
const ALIGN = 4096;
const O_TMPFILE = 0o20200000;
let big = null;
/** Scratch for one chunk and a tail; k: the offset in it that direct I/O accepts (-1: none). */
function bigFor(n, dir) {
  if (big !== null && big.buf.length >= n + 2 * ALIGN) return big;
  const size = roundMiB(n + 2 * ALIGN);
  const buf = Buffer.allocUnsafeSlow(size);
  let k = -1;
  // The memory alignment direct I/O needs depends on the device: probe it with an unnamed
  // temporary file of the target's filesystem (never visible, gone when closed).
  try {
    const pfd = fs.openSync(dir, O_TMPFILE | C.O_RDWR | C.O_DIRECT, 0o600);
    try {
      for (let c = 0; c < ALIGN && k < 0; c += 16) {
        try { fs.writeSync(pfd, buf, c, ALIGN, 0); k = c; } catch (e) { if (!e || e.code !== 'EINVAL') break; }
      }
    } finally { fs.closeSync(pfd); }
  } catch {}
  big = { buf, k };
  return big;
}
const large = new Map();
/** Scratch sizes: whole MiB (chunks are 0.5–8 MiB; powers of two would waste up to half). */
function roundMiB(n) { return Math.ceil(n / (1 << 20)) * (1 << 20); }
let rbuf = null;
let directReads = true;
/**
 * Read scratch; k: the offset in it that direct reads of this pack accept (-1: none). Probed
 * with a harmless aligned read of the pack's first block.
 */
function rbufFor(n, dfd) {
  if (rbuf !== null && rbuf.buf.length >= n + 2 * ALIGN && (rbuf.k >= 0 || dfd < 0)) return rbuf;
  const size = roundMiB(n + 2 * ALIGN);
  const buf = rbuf !== null && rbuf.buf.length >= size ? rbuf.buf : Buffer.allocUnsafeSlow(size);
  let k = -1;
  if (dfd >= 0) {
    for (let c = 0; c < ALIGN && k < 0; c += 16) {
      try { fs.readSync(dfd, buf, c, ALIGN, 0); k = c; } catch (e) { if (!e || e.code !== 'EINVAL') break; }
    }
  }
  rbuf = { buf, k };
  return rbuf;
}
/**
 * A chunk's stored bytes read from its pack (local repositories: the main thread only says
 * where), with O_DIRECT when the filesystem takes it: no copy through the page cache.
 */
function readStored(st, m) {
  let p = st.packs.get(m.path);
  if (p === undefined) {
    let fd;
    try { fd = fs.openSync(m.path, C.O_RDONLY | C.O_NOFOLLOW); } catch (e) {
      throw new Error('${INTEGRITY_PREFIX}blob ' + m.bid + ': cannot open its pack (' + (e && e.code || e) + ')');
    }
    let dfd = -1;
    try { dfd = fs.openSync(m.path, C.O_RDONLY | C.O_NOFOLLOW | C.O_DIRECT); } catch {}
    if (st.packs.size >= 4) { const [q, old] = st.packs.entries().next().value; st.packs.delete(q); closePack(old); }
    p = { fd, dfd };
    st.packs.set(m.path, p);
  }
  const start = m.offset - (m.offset % ALIGN);
  const span = Math.ceil((m.offset + m.len - start) / ALIGN) * ALIGN;
  const r = rbufFor(span, directReads ? p.dfd : -1);
  if (p.dfd >= 0 && r.k < 0) {
    // No memory alignment works for this filesystem: buffered reads from here on.
    directReads = false;
    try { fs.closeSync(p.dfd); } catch {}
    p.dfd = -1;
  }
  if (p.dfd >= 0 && r.k >= 0) {
    let n = -1;
    try { n = readInto(p.dfd, r.buf, r.k, span, start); } catch (e) {
      if (!e || e.code !== 'EINVAL') throw e;
      try { fs.closeSync(p.dfd); } catch {}
      p.dfd = -1;
    }
    if (n >= 0) {
      if (n < m.offset + m.len - start) throw new Error('${INTEGRITY_PREFIX}blob ' + m.bid + ': truncated (its pack ends early)');
      return r.buf.subarray(r.k + m.offset - start, r.k + m.offset - start + m.len);
    }
  }
  const n = readInto(p.fd, r.buf, 0, m.len, m.offset);
  if (n < m.len) throw new Error('${INTEGRITY_PREFIX}blob ' + m.bid + ': truncated (its pack ends early)');
  return r.buf.subarray(0, m.len);
}
let sbuf = Buffer.alloc(0);
/** A small blob's stored bytes from its pack (buffered: the page cache reads ahead for its neighbours). */
function readSmall(packs, path, offset, len, bid) {
  let fd = packs.get(path);
  if (fd === undefined) {
    try { fd = fs.openSync(path, C.O_RDONLY | C.O_NOFOLLOW); } catch (e) {
      throw new Error('${INTEGRITY_PREFIX}blob ' + bid + ': cannot open its pack (' + (e && e.code || e) + ')');
    }
    packs.set(path, fd);
  }
  if (sbuf.length < len) sbuf = Buffer.allocUnsafeSlow(Math.max(len, 1 << 20));
  const n = readInto(fd, sbuf, 0, len, offset);
  if (n < len) throw new Error('${INTEGRITY_PREFIX}blob ' + bid + ': truncated (its pack ends early)');
  return sbuf.subarray(0, len);
}
function closePack(p) {
  try { fs.closeSync(p.fd); } catch {}
  if (p.dfd >= 0) try { fs.closeSync(p.dfd); } catch {}
}
function dwrite(st, buf, off, len, pos) {
  if (st.dfd >= 0) {
    try { writeAll(st.dfd, buf, off, len, pos); return; } catch (e) {
      if (!e || e.code !== 'EINVAL') throw e;
      // The filesystem took O_DIRECT at open but not this write: buffered from here on.
      try { fs.closeSync(st.dfd); } catch {}
      st.dfd = -1;
    }
  }
  writeAll(st.fd, buf, off, len, pos);
}
/** Aligned blocks [off, off + len) of buf to file offset pos (skipping all-zero blocks when sparse). */
function writeBlocks(st, buf, off, len, pos) {
  if (!st.sparse) { if (len > 0) { dwrite(st, buf, off, len, pos); st.end = Math.max(st.end, pos + len); } return; }
  let run = -1;
  for (let o = 0; o < len; o += ALIGN) {
    const zero = Buffer.compare(buf.subarray(off + o, off + o + ALIGN), ZERO) === 0;
    if (zero) {
      if (run >= 0) { dwrite(st, buf, off + run, o - run, pos + run); st.end = Math.max(st.end, pos + o); run = -1; }
    } else if (run < 0) run = o;
  }
  if (run >= 0) { dwrite(st, buf, off + run, len - run, pos + run); st.end = Math.max(st.end, pos + len); }
}
function flushTail(st) {
  if (st.tailLen > 0) st.end = Math.max(st.end, writeData(st.fd, st.tail.subarray(0, st.tailLen), st.tailBase, st.sparse));
  st.tailLen = 0;
}
function largeChunk(m) {
  let st = large.get(m.fd);
  if (st === undefined) {
    st = { fd: m.fd, dfd: -1, sparse: m.sparse, tail: Buffer.alloc(ALIGN), tailBase: -1, tailLen: 0, end: 0, failed: false, packs: new Map() };
    large.set(m.fd, st);
    const b = bigFor(m.raw, m.dir);
    if (b.k >= 0) { try { st.dfd = fs.openSync('/proc/self/fd/' + m.fd, C.O_WRONLY | C.O_DIRECT); } catch {} }
  }
  if (st.failed) return 'ESKIPPED';
  const b = bigFor(m.raw, m.dir);
  try {
    const stored = m.buf ? Buffer.from(m.buf, 0, m.len) : readStored(st, m);
    if (st.dfd < 0 || b.k < 0) {
      const out = decode(m.bid, stored, m.flags, m.raw, b.buf, 0);
      st.end = Math.max(st.end, writeData(st.fd, out, m.pos, st.sparse));
      return null;
    }
    if (st.tailBase < 0 || m.pos >= st.tailBase + ALIGN) {
      flushTail(st);
      st.tailBase = m.pos - (m.pos % ALIGN);
    }
    // Bytes between the tail and this chunk are a hole: zeros.
    const gap = m.pos - st.tailBase;
    if (gap < st.tailLen) throw new Error('chunks out of order');
    st.tail.fill(0, st.tailLen, gap);
    st.tail.copy(b.buf, b.k, 0, gap);
    decode(m.bid, stored, m.flags, m.raw, b.buf, b.k + gap);
    const total = gap + m.raw;
    const aligned = total - (total % ALIGN);
    writeBlocks(st, b.buf, b.k, aligned, st.tailBase);
    b.buf.copy(st.tail, 0, b.k + aligned, b.k + total);
    st.tailBase += aligned;
    st.tailLen = total - aligned;
    return null;
  } catch (e) {
    st.failed = true;
    return e && e.code ? e.code : String(e && e.message || e);
  }
}
function largeFinish(m) {
  const st = large.get(m.fd);
  large.delete(m.fd);
  if (st === undefined) return { end: 0, error: null };
  let error = null;
  try {
    if (!st.failed && !m.discard) flushTail(st);
  } catch (e) { error = e && e.code ? e.code : String(e && e.message || e); }
  if (st.dfd >= 0) try { fs.closeSync(st.dfd); } catch {}
  for (const p of st.packs.values()) closePack(p);
  return { end: st.end, error };
}
function warm(dir) {
  let names;
  try { names = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  names.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const sub = [];
  for (const d of names) {
    const p = dir + '/' + d.name;
    try { fs.lstatSync(p, { throwIfNoEntry: false }); } catch {}
    if (d.isDirectory()) sub.push(p);
  }
  for (const p of sub) warm(p);
}
${SLAB_SOURCE}
parentPort.on('message', (m) => {
  // The buffer lent with the request (shared: the reply does not send it back).
  if (m.slab !== undefined) m.buf = slabOf(m);
  if (m.kind === 'warm') {
    for (const d of m.paths) warm(d);
    parentPort.postMessage({ id: m.id });
  } else if (m.kind === 'write') {
    const n = m.paths.length;
    const results = new Array(n).fill(null);
    const v = m.nums;
    const all = Buffer.from(m.buf);
    const packs = new Map();
    for (let i = 0; i < n; i++) {
      const k = i * ${WRITE_FIELDS};
      const f = { path: m.paths[i], size: v[k], off: v[k + 1], len: v[k + 2], mode: v[k + 3], uid: v[k + 4], gid: v[k + 5], atime: v[k + 6], mtime: v[k + 7], atimeNs: v[k + 12], mtimeNs: v[k + 13],
        chown: (v[k + 8] & 1) !== 0, sparse: (v[k + 8] & 2) !== 0, overwrite: (v[k + 8] & 4) !== 0 };
      try {
        const bid = m.blobs ? m.blobs[i] : null;
        const pack = m.packs ? m.packs[i] : null;
        // Blobs of local repositories are read here, from their packs.
        let data = pack ? readSmall(packs, pack, v[k + 11], f.len, bid) : all.subarray(f.off, f.off + f.len);
        // Stored blobs: decoded and verified here, before anything is created.
        if (bid) data = decode(bid, data, v[k + 9], v[k + 10], plainFor(v[k + 10]), 0);
        writeOne(f, data);
      } catch (e) { results[i] = e && e.code ? e.code : String(e && e.message || e); }
    }
    for (const fd of packs.values()) try { fs.closeSync(fd); } catch {}
    parentPort.postMessage({ id: m.id, results });
  } else if (m.kind === 'cblock') {
    const r = chunkedBlock(m);
    parentPort.postMessage({ id: m.id, ...r });
  } else if (m.kind === 'cend') {
    chunked.delete(m.token);
    parentPort.postMessage({ id: m.id });
  } else if (m.kind === 'chunk') {
    const error = largeChunk(m);
    parentPort.postMessage({ id: m.id, error });
  } else if (m.kind === 'finish') {
    const r = largeFinish(m);
    parentPort.postMessage({ id: m.id, n: r.end, error: r.error });
  } else if (m.kind === 'batch') {
    const buf = m.buf;
    const u8 = new Uint8Array(buf);
    const lens = new Array(m.paths.length);
    const errors = new Array(m.paths.length).fill(null);
    const ids = hashing ? new Array(m.paths.length).fill(null) : undefined;
    let off = 0;
    for (let i = 0; i < m.paths.length; i++) {
      const size = m.sizes[i];
      let fd = -1;
      try {
        fd = fs.openSync(m.paths[i], flags);
        lens[i] = readInto(fd, u8, off, size, 0);
        if (ids !== undefined && lens[i] > 0) ids[i] = blobId(u8.subarray(off, off + lens[i]));
      } catch (e) {
        lens[i] = -1;
        errors[i] = e && e.code ? e.code : String(e && e.message || e);
      } finally {
        if (fd >= 0) try { fs.closeSync(fd); } catch {}
      }
      off += size;
    }
    parentPort.postMessage({ id: m.id, lens, errors, ids });
  } else {
    try {
      parentPort.postMessage({ id: m.id, n: readBlock(m, m.check), error: null });
    } catch (e) {
      parentPort.postMessage({ id: m.id, n: 0, error: e && e.code ? e.code : String(e && e.message || e) });
    }
  }
});
`;

interface Pending {
  resolve: (m: WorkerReply) => void;
  reject: (e: unknown) => void;
  worker: number;
}

/** One small file for a writer thread: its bytes are `buf[off, off + len)` of the batch. */
export interface WriteSpec {
  path: string;
  size: number;
  off: number;
  len: number;
  mode: number;
  uid: number;
  gid: number;
  /** [seconds, nanoseconds] (see times.ts splitNs). */
  atime: [number, number];
  mtime: [number, number];
  chown: boolean;
  /** Skip all-zero 4 KiB blocks (holes) and ftruncate to size. */
  sparse: boolean;
  /** Replace an existing non-directory. */
  overwrite: boolean;
  /**
   * The bytes are this blob as stored: the thread decodes and verifies them (needs the pool's
   * codec). With `path`, the thread reads them itself (`len` bytes at `offset` of that file).
   */
  blob?: { id: string; flags: number; rawLength: number; path?: string; offset?: number };
}

/** One chunk of a large file for its writer thread (see IoPool.fileWriter). */
export interface ChunkSpec {
  /** File offset of the chunk's plaintext. */
  pos: number;
  id: string;
  flags: number;
  rawLength: number;
  /** The blob as stored; copied before writeChunk returns. */
  stored: Buffer;
}

/** Writes one large file's chunks, in file order, on one thread (O_DIRECT where possible). */
export interface FileWriter {
  /** Decode, verify and write one chunk; rejects with an Error whose `code` says why (EINTEGRITY:…, ENOSPC, ...). */
  writeChunk(c: ChunkSpec): Promise<void>;
  /** The same for a chunk the thread reads itself (see BlobStore.locateStored). */
  writeChunkFrom(pos: number, ref: StoredRef): Promise<void>;
  /** Write what is left; resolves with the end of the data written (the caller truncates to the size). `discard`: drop it. */
  finish(discard: boolean): Promise<number>;
}

interface WorkerReply {
  id: number;
  results?: (string | null)[];
  lens?: number[];
  errors?: (string | null)[];
  n?: number;
  error?: string | null;
  ids?: (string | null)[];
  cuts?: number[];
  last?: boolean;
}

/** A pool of I/O threads. */
export class IoPool {
  private readonly workers: Worker[] = [];
  private readonly busy: number[] = [];
  /** Large files being written per thread (fileWriter): other work goes to threads without one first. */
  private readonly large: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: unknown;
  /** Buffers lent to the threads (read buffers come back through recycle()). */
  private readonly buffers: SharedBufferPool;

  /**
   * Up to `threads` threads, started on demand (a new one when every running
   * one is busy). `flags`: open(2) flags for every file (O_RDONLY|O_NOFOLLOW|...).
   */
  constructor(
    private readonly threads: number,
    private readonly flags: number,
    /** Usual size of a read (smaller reads get a buffer this big, so buffers can serve any read). */
    bufferSize = 1 << 20,
    /** For writes of stored blobs: decoding and verification on the threads. */
    private readonly codec?: BlobCodec,
    /** For reads of a backup: chunk IDs (small files) and chunk boundaries (large files) computed on the threads. */
    hashing?: ChunkHashing,
  ) {
    this.buffers = new SharedBufferPool(bufferSize);
    if (hashing !== undefined) {
      this.hashing = {
        key: new Uint8Array(hashing.hashKey),
        gear: gearTable(hashing.chunker.seed).slice(),
        chunker: hashing.chunker,
        blakePath: blake3Path,
      };
    }
    this.spawn();
  }

  private readonly hashing?: { key: Uint8Array; gear: Int32Array; chunker: Required<ChunkerOptions>; blakePath: string };
  private nextToken = 1;

  /** True when the threads hash (readBatch returns ids, chunkedReader is available). */
  get hashes(): boolean {
    return this.hashing !== undefined;
  }

  private spawn(): void {
    const i = this.workers.length;
    const w = new Worker(workerSource, {
      eval: true,
      workerData: { flags: this.flags, codec: this.codec, hashing: this.hashing, addonPath, errnoNames: ERRNO_NAMES, umask: UMASK },
      // These threads allocate little JavaScript; a small young generation keeps each one's heap small.
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB },
    });
    w.unref();
    w.on('message', (m: WorkerReply) => this.onReply(i, m));
    w.on('error', (err) => this.failAll(err));
    this.workers.push(w);
    this.busy.push(0);
    this.large.push(0);
  }

  /** Start every thread now instead of on demand. */
  start(): void {
    while (this.workers.length < this.threads) this.spawn();
  }

  /** Requests not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** The least busy thread (a new one when every running one is busy and there is room). */
  private pick(): number {
    let w = 0;
    // A thread writing a large file counts as busy as it gets: the file's chunks wait behind
    // whatever else it is given, and a large file that falls behind is the restore's last work.
    const load = (i: number) => this.busy[i]! + (this.large[i]! > 0 ? 1 << 20 : 0);
    for (let i = 1; i < this.workers.length; i++) if (load(i) < load(w)) w = i;
    if (load(w) > 0 && this.workers.length < this.threads) {
      this.spawn();
      w = this.workers.length - 1;
    }
    return w;
  }

  /** Send a request to a thread (the least busy unless `worker`), lending it `buf`. */
  private send(msg: Record<string, unknown>, buf?: SharedArrayBuffer, worker?: number): Promise<WorkerReply> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const w = worker ?? this.pick();
    const id = this.nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: w });
      this.busy[w]!++;
      if (this.busy[w] === 1) this.workers[w]!.ref();
      this.workers[w]!.postMessage(buf === undefined ? { ...msg, id } : { ...msg, ...this.buffers.lend(buf, w), id });
    });
  }

  private onReply(worker: number, m: WorkerReply): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    this.busy[worker]!--;
    if (this.busy[worker] === 0) this.workers[worker]!.unref();
    p.resolve(m);
  }

  private failAll(err: unknown): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Read whole small files (at most `sizes[i]` bytes each) in one request. */
  async readBatch(paths: string[], sizes: number[]): Promise<BatchResult> {
    // Buffers are allocated here and lent to the thread: memory allocated by
    // worker threads and freed on the main thread stays in their malloc arenas.
    let total = 0;
    for (const s of sizes) total += s;
    const buf = this.buffers.take(total);
    const m = await this.send({ kind: 'batch', paths, sizes }, buf);
    const offsets = new Array<number>(sizes.length);
    let off = 0;
    for (let i = 0; i < sizes.length; i++) {
      offsets[i] = off;
      off += sizes[i]!;
    }
    return { buf: Buffer.from(buf), offsets, lens: m.lens!, errors: m.errors!, ids: m.ids };
  }

  /**
   * Read a large file of `size` bytes (as walked) block by block on one thread, which cuts it
   * into chunks and hashes them (needs hashing). Blocks must be read in order, from offset 0.
   */
  chunkedReader(path: string, size: number, sparse: boolean): ChunkedReader {
    if (this.hashing === undefined) throw new Error('IoPool: chunked reads need hashing');
    const token = this.nextToken++;
    const worker = this.pick();
    let ended = false;
    return {
      read: async (offset, length) => {
        const buf = this.buffers.take(length);
        const m = await this.send({ kind: 'cblock', token, path, offset, length, size, sparse }, buf, worker);
        if (m.error) {
          ended = true;
          this.buffers.give(buf);
          return { buf: Buffer.alloc(0), error: m.error, cuts: [], ids: [] };
        }
        if (m.last) ended = true;
        return { buf: Buffer.from(buf, 0, m.n!), error: null, cuts: m.cuts!, ids: m.ids! };
      },
      close: () => {
        if (!ended && this.failure === undefined) this.send({ kind: 'cend', token }, undefined, worker).catch(() => undefined);
        ended = true;
      },
    };
  }

  /** Read up to `length` bytes at `offset` (fewer at the end of the file). `check`: verify it is still a regular file. */
  async readBlock(path: string, offset: number, length: number, check: boolean): Promise<BlockResult> {
    const buf = this.buffers.take(length);
    const m = await this.send({ kind: 'block', path, offset, length, check }, buf);
    if (m.error) {
      this.buffers.give(buf);
      return { buf: Buffer.alloc(0), error: m.error };
    }
    return { buf: Buffer.from(buf, 0, m.n!), error: null };
  }

  /**
   * Hand back the buffer of a readBatch or readBlock result once nothing refers
   * to it any more: the next read reuses it.
   */
  recycle(buf: Buffer): void {
    this.buffers.give(buf.buffer as SharedArrayBuffer);
  }

  /**
   * Create and write small files (their parent directories exist) from `parts`
   * (copied into one buffer for the thread). Per file: null, or an error code
   * (EEXIST without overwrite, EISDIR, ENOSPC, ...).
   */
  async writeFiles(files: WriteSpec[], parts: Buffer[], total: number): Promise<(string | null)[]> {
    const ab = this.buffers.take(total);
    const u8 = new Uint8Array(ab);
    let off = 0;
    for (const p of parts) {
      copyInto(u8, off, p);
      off += p.length;
    }
    // Columns, not objects: structured clone of 64 objects costs ~3x more.
    const paths = new Array<string>(files.length);
    const nums = new Float64Array(files.length * WRITE_FIELDS);
    let blobs: (string | null)[] | undefined;
    let packs: (string | null)[] | undefined;
    for (let i = 0; i < files.length; i++) {
      const f = files[i]!;
      const k = i * WRITE_FIELDS;
      paths[i] = f.path;
      nums[k] = f.size;
      nums[k + 1] = f.off;
      nums[k + 2] = f.len;
      nums[k + 3] = f.mode;
      nums[k + 4] = f.uid;
      nums[k + 5] = f.gid;
      nums[k + 6] = f.atime[0];
      nums[k + 7] = f.mtime[0];
      nums[k + 12] = f.atime[1];
      nums[k + 13] = f.mtime[1];
      nums[k + 8] = (f.chown ? 1 : 0) | (f.sparse ? 2 : 0) | (f.overwrite ? 4 : 0);
      if (f.blob !== undefined) {
        if (this.codec === undefined) throw new Error('IoPool: stored blobs need a codec');
        blobs ??= new Array<string | null>(files.length).fill(null);
        blobs[i] = f.blob.id;
        nums[k + 9] = f.blob.flags;
        nums[k + 10] = f.blob.rawLength;
        if (f.blob.path !== undefined) {
          packs ??= new Array<string | null>(files.length).fill(null);
          packs[i] = f.blob.path;
          nums[k + 11] = f.blob.offset ?? 0;
        }
      }
    }
    const m = await this.send({ kind: 'write', paths, nums, blobs, packs }, ab);
    this.buffers.give(ab);
    return m.results!;
  }

  /**
   * A writer for one large file already open for writing at `fd` (its path
   * names the directory whose filesystem O_DIRECT is probed on). Its chunks all
   * go to one thread, in the order they are given. The caller closes fd after
   * finish().
   */
  fileWriter(fd: number, path: string, sparse: boolean): FileWriter {
    if (this.codec === undefined) throw new Error('IoPool: file writers need a codec');
    // Large files share the first LARGE_THREADS threads: each keeps chunk-sized scratch buffers,
    // and two threads already keep both cores busy decoding.
    while (this.workers.length < Math.min(this.threads, LARGE_THREADS)) this.spawn();
    let worker = 0;
    for (let i = 1; i < Math.min(this.workers.length, LARGE_THREADS); i++) if (this.busy[i]! < this.busy[worker]!) worker = i;
    const dir = path.slice(0, path.lastIndexOf('/')) || '/';
    this.large[worker]!++;
    let open = true;
    const done = () => {
      if (open) this.large[worker]!--;
      open = false;
    };
    return {
      writeChunk: async (c) => {
        const ab = this.buffers.take(c.stored.length);
        copyInto(new Uint8Array(ab), 0, c.stored);
        const m = await this.send(
          { kind: 'chunk', fd, dir, sparse, pos: c.pos, bid: c.id, flags: c.flags, raw: c.rawLength, len: c.stored.length },
          ab,
          worker,
        );
        this.buffers.give(ab);
        if (m.error) throw Object.assign(new Error(m.error), { code: m.error });
      },
      writeChunkFrom: async (pos, r) => {
        const m = await this.send(
          { kind: 'chunk', fd, dir, sparse, pos, bid: r.id, flags: r.flags, raw: r.rawLength, len: r.length, path: r.path, offset: r.offset, buf: null },
          undefined,
          worker,
        );
        if (m.error) throw Object.assign(new Error(m.error), { code: m.error });
      },
      finish: async (discard) => {
        try {
          const m = await this.send({ kind: 'finish', fd, discard }, undefined, worker);
          if (m.error) throw Object.assign(new Error(m.error), { code: m.error });
          return m.n!;
        } finally {
          done();
        }
      },
    };
  }

  /**
   * Walk these directory trees (readdir + lstat of every entry, in name order)
   * to bring their metadata into the kernel's caches ahead of the main walk.
   */
  async warm(paths: string[]): Promise<void> {
    await this.send({ kind: 'warm', paths });
  }

  /** Stop the threads; requests in flight are rejected. */
  async close(): Promise<void> {
    this.failAll(new Error('reader pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
