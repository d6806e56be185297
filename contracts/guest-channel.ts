/**
 * The host <-> guest channel: length-prefixed frames on the instance's stream (the process sandbox's Unix
 * socket, a microVM's TCP port), cheaper than HTTP on a path that carries every call. The routes,
 * headers and bodies are guest-protocol.ts's, unchanged: a frame carries one request or answer of that
 * protocol, and the user's console lines travel beside the answers in batches of their own.
 *
 * A connection speaks frames when its first bytes are CHANNEL_PREAMBLE (its first byte, NUL, never
 * starts an HTTP request); any other connection is served HTTP, so curl, the microVM driver's health
 * poll and older hosts still reach the runtime.
 *
 * Every frame:   u32 length of the rest | u8 type | u32 call id | payload        (big-endian)
 *   REQUEST  (host -> guest)  u8 method length, method | u16 path length, path | u16 header count,
 *                             per header: u16 name length, name, u32 value length, value | body (the rest)
 *   RESPONSE (guest -> host)  u16 status | u32 head length | head: u16 header count, headers as above
 *                             (a repeated name is several values) | body (the rest)
 *   CONSOLE  (guest -> host)  u32 lines dropped before this batch | per line: u8 level, u8 kind,
 *                             u16 fn length, fn, u16 rid length, rid, u32 msg length, msg (UTF-8)
 * Method, path, header names and values, fn and rid are latin1 (each char one byte, as HTTP/1.1 carries
 * them); bodies are bytes. A CONSOLE batch comes before the RESPONSE it was written for, in the same
 * write, so the host has a call's lines when it has its answer. Call id 0 is no call.
 *
 * Pure: no I/O. Both the host's GuestClient and the guest runtime import it.
 */
import type { GuestLogLine } from "./guest-protocol.ts";

/** The first bytes of a framed connection, sent once by the host. */
export const CHANNEL_PREAMBLE = Buffer.from("\0faas-frames/1\n", "latin1");

export const FrameType = { request: 1, response: 2, console: 3 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Length prefix, type, call id. */
export const FRAME_HEADER_BYTES = 9;
/** Room a response's status and headers may take beside its body (a response limit counts the body). */
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;

const LEVELS: readonly GuestLogLine["level"][] = ["debug", "info", "warn", "error"];
const KINDS: readonly GuestLogLine["type"][] = ["log", "fatal", "ready"];

export type FrameHeaders = Record<string, string | string[] | number | undefined>;

export interface ChannelRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Uint8Array | null;
}

export interface ChannelResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

export class ChannelProtocolError extends Error {
  override readonly name = "ChannelProtocolError";
}

function headersSize(headers: FrameHeaders): number {
  let n = 2;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) n += 6 + name.length + String(one).length;
    else n += 6 + name.length + String(v).length;
  }
  return n;
}

/** One header as a frame carries it; returns the offset after it. */
function putHeader(buf: Buffer, off: number, name: string, value: string): number {
  buf.writeUInt16BE(name.length, off);
  off += 2;
  off += buf.write(name, off, "latin1");
  buf.writeUInt32BE(value.length, off);
  off += 4;
  return off + buf.write(value, off, "latin1");
}

function writeHeaders(buf: Buffer, at: number, headers: FrameHeaders): number {
  let count = 0;
  let off = at + 2;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v))
      for (const one of v) {
        off = putHeader(buf, off, name, String(one));
        count++;
      }
    else {
      off = putHeader(buf, off, name, String(v));
      count++;
    }
  }
  if (count > 0xffff) throw new ChannelProtocolError(`${count} headers: at most 65535 fit in a frame`);
  buf.writeUInt16BE(count, at);
  return off;
}

function writeFrameHeader(buf: Buffer, type: FrameType, id: number): void {
  buf.writeUInt32BE(buf.length - 4, 0);
  buf[4] = type;
  buf.writeUInt32BE(id, 5);
}

/** One REQUEST frame, in one buffer. */
export function encodeRequest(id: number, req: ChannelRequest): Buffer {
  if (req.method.length > 0xff) throw new ChannelProtocolError("a method name longer than 255 characters");
  if (req.path.length > 0xffff) throw new ChannelProtocolError("a path longer than 65535 characters");
  const body = req.body ?? EMPTY;
  const size = FRAME_HEADER_BYTES + 1 + req.method.length + 2 + req.path.length + headersSize(req.headers);
  const buf = Buffer.allocUnsafe(size + body.length);
  let off = FRAME_HEADER_BYTES;
  buf[off++] = req.method.length;
  off += buf.write(req.method, off, "latin1");
  buf.writeUInt16BE(req.path.length, off);
  off += 2;
  off += buf.write(req.path, off, "latin1");
  off = writeHeaders(buf, off, req.headers);
  if (body.length > 0) buf.set(body, off);
  writeFrameHeader(buf, FrameType.request, id);
  return buf;
}

const EMPTY = Buffer.alloc(0);

/**
 * One RESPONSE frame. `body` may be a string (encoded UTF-8 straight into the frame, no copy of its own).
 */
export function encodeResponse(
  id: number,
  status: number,
  headers: FrameHeaders,
  body: string | Uint8Array,
): Buffer {
  const head = headersSize(headers);
  const bodyBytes = typeof body === "string" ? Buffer.byteLength(body) : body.length;
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 6 + head + bodyBytes);
  let off = FRAME_HEADER_BYTES;
  buf.writeUInt16BE(status, off);
  buf.writeUInt32BE(head, off + 2);
  off = writeHeaders(buf, off + 6, headers);
  if (typeof body === "string") buf.write(body, off, "utf8");
  else buf.set(body, off);
  writeFrameHeader(buf, FrameType.response, id);
  return buf;
}

/** One CONSOLE frame with these lines (fn and rid latin1, msg UTF-8). */
export function encodeConsole(lines: readonly GuestLogLine[], dropped: number): Buffer {
  let size = FRAME_HEADER_BYTES + 4;
  const msgBytes: number[] = [];
  for (const l of lines) {
    const m = Buffer.byteLength(l.msg);
    msgBytes.push(m);
    size += 10 + (l.fn?.length ?? 0) + (l.rid?.length ?? 0) + m;
  }
  const buf = Buffer.allocUnsafe(size);
  let off = FRAME_HEADER_BYTES;
  buf.writeUInt32BE(dropped, off);
  off += 4;
  lines.forEach((l, i) => {
    const level = LEVELS.indexOf(l.level);
    buf[off++] = level < 0 ? 1 : level; // a level not in the protocol is info, as the host reads it
    buf[off++] = Math.max(0, KINDS.indexOf(l.type));
    const fn = (l.fn ?? "").slice(0, 0xffff);
    const rid = (l.rid ?? "").slice(0, 0xffff);
    buf.writeUInt16BE(fn.length, off);
    off += 2;
    off += buf.write(fn, off, "latin1");
    buf.writeUInt16BE(rid.length, off);
    off += 2;
    off += buf.write(rid, off, "latin1");
    buf.writeUInt32BE(msgBytes[i]!, off);
    off += 4;
    off += buf.write(l.msg, off, "utf8");
  });
  writeFrameHeader(buf.subarray(0, off), FrameType.console, 0);
  return off === buf.length ? buf : buf.subarray(0, off);
}

/** Reads a frame's fields in order, refusing any that runs past its end. */
class Cursor {
  off = 0;
  constructor(
    readonly buf: Buffer,
    readonly what: string,
  ) {}
  need(n: number): void {
    if (this.off + n > this.buf.length) throw new ChannelProtocolError(`a ${this.what} frame ends mid-field`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  latin1(n: number): string {
    this.need(n);
    const s = this.buf.toString("latin1", this.off, this.off + n);
    this.off += n;
    return s;
  }
  utf8(n: number): string {
    this.need(n);
    const s = this.buf.toString("utf8", this.off, this.off + n);
    this.off += n;
    return s;
  }
  rest(): Buffer {
    return this.buf.subarray(this.off);
  }
}

function readHeaders(c: Cursor, multi: boolean): Record<string, string | string[]> {
  const count = c.u16();
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i < count; i++) {
    const name = c.latin1(c.u16());
    const value = c.latin1(c.u32());
    const had = headers[name];
    if (had === undefined || !multi) headers[name] = value;
    else headers[name] = Array.isArray(had) ? [...had, value] : [had, value];
  }
  return headers;
}

/** A REQUEST frame's payload (what follows the frame header). */
export function decodeRequest(payload: Buffer): ChannelRequest & { readonly body: Buffer } {
  const c = new Cursor(payload, "request");
  const method = c.latin1(c.u8());
  const path = c.latin1(c.u16());
  const headers = readHeaders(c, false) as Record<string, string>;
  return { method, path, headers, body: c.rest() };
}

/** A RESPONSE frame's payload. */
export function decodeResponse(payload: Buffer): ChannelResponse {
  const c = new Cursor(payload, "response");
  const status = c.u16();
  const headLength = c.u32();
  const bodyAt = c.off + headLength;
  const headers = readHeaders(c, true);
  if (c.off !== bodyAt)
    throw new ChannelProtocolError("a response frame's head length does not match its headers");
  return { status, headers, body: c.rest() };
}

/** Bytes of a RESPONSE payload's body, read from its first six bytes (undefined: not there yet). */
export function responseBodyBytes(payload: Buffer): number | undefined {
  if (payload.length < 6) return undefined;
  return payload.length - 6 - payload.readUInt32BE(2);
}

/** A CONSOLE frame's payload: its lines as the guest wrote them (untrusted: the host checks each). */
export function decodeConsole(payload: Buffer): { lines: GuestLogLine[]; dropped: number } {
  const c = new Cursor(payload, "console");
  const dropped = c.u32();
  const lines: GuestLogLine[] = [];
  while (c.off < payload.length) {
    const level = LEVELS[c.u8()] ?? "info";
    const type = KINDS[c.u8()] ?? "log";
    const fn = c.latin1(c.u16());
    const rid = c.latin1(c.u16());
    const msg = c.utf8(c.u32());
    lines.push({ type, fn: fn || null, rid: rid || null, level, msg });
  }
  return { lines, dropped };
}

/**
 * Splits a stream's chunks into frames. `limit(type, id)` bounds each frame's length before its bytes
 * are buffered (a frame past it is refused by `onTooLarge`, and the reader stops: the stream cannot be
 * resynchronised); whole frames go to `onFrame` with a payload that may share the chunk's memory.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private stopped = false;

  constructor(
    private readonly onFrame: (type: number, id: number, payload: Buffer) => void,
    private readonly limit: (type: number, id: number) => number,
    private readonly onTooLarge: (type: number, id: number, length: number) => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.buffered === 0) {
      // The common case: whole frames in one chunk, read without copying.
      let off = 0;
      while (chunk.length - off >= FRAME_HEADER_BYTES) {
        const length = chunk.readUInt32BE(off);
        if (!this.check(length, chunk[off + 4]!, chunk.readUInt32BE(off + 5))) return;
        if (chunk.length - off - 4 < length) break;
        this.onFrame(
          chunk[off + 4]!,
          chunk.readUInt32BE(off + 5),
          chunk.subarray(off + FRAME_HEADER_BYTES, off + 4 + length),
        );
        if (this.stopped) return;
        off += 4 + length;
      }
      if (off === chunk.length) return;
      chunk = chunk.subarray(off);
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= FRAME_HEADER_BYTES) {
      const head = this.chunks[0]!.length >= FRAME_HEADER_BYTES ? this.chunks[0]! : this.flatten();
      const length = head.readUInt32BE(0);
      const type = head[4]!;
      const id = head.readUInt32BE(5);
      if (!this.check(length, type, id)) return;
      if (this.buffered - 4 < length) return;
      const all = this.flatten();
      this.onFrame(type, id, all.subarray(FRAME_HEADER_BYTES, 4 + length));
      if (this.stopped) return;
      const rest = all.subarray(4 + length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
  }

  /** Stops reading: nothing more is passed on. */
  stop(): void {
    this.stopped = true;
    this.chunks = [];
    this.buffered = 0;
  }

  private check(length: number, type: number, id: number): boolean {
    if (length < FRAME_HEADER_BYTES - 4 || length > this.limit(type, id)) {
      this.stop();
      this.onTooLarge(type, id, length);
      return false;
    }
    return true;
  }

  private flatten(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }
}
