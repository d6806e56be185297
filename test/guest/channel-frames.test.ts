/** The framed host <-> guest channel's codec (contracts/guest-channel.ts), as both sides use it. */
import assert from "node:assert/strict";
import {
  ChannelProtocolError,
  decodeConsole,
  decodeRequest,
  decodeResponse,
  encodeConsole,
  encodeRequest,
  encodeResponse,
  FrameReader,
  FrameType,
  responseBodyBytes,
} from "../../contracts/guest-channel.ts";

interface Seen {
  type: number;
  id: number;
  payload: Buffer;
}

function reader(limit = 1 << 20) {
  const frames: Seen[] = [];
  const refused: Array<[number, number, number]> = [];
  const r = new FrameReader(
    (type, id, payload) => frames.push({ type, id, payload: Buffer.from(payload) }),
    () => limit,
    (type, id, length) => refused.push([type, id, length]),
  );
  return { r, frames, refused };
}

describe("guest channel frames", () => {
  it("carries a request's method, path, headers (latin1) and body bytes unchanged", () => {
    const body = Buffer.from([0, 1, 2, 255, 0xc3]);
    const frame = encodeRequest(7, {
      method: "PATCH",
      path: "/fn/a%20b?q=é",
      headers: { "x-faas-request-id": "r-1", "x-odd": "caf\u00e9", empty: "" },
      body,
    });
    assert.equal(frame.readUInt32BE(0), frame.length - 4);
    assert.equal(frame[4], FrameType.request);
    assert.equal(frame.readUInt32BE(5), 7);
    const req = decodeRequest(frame.subarray(9));
    assert.deepEqual(
      { ...req, body: [...req.body] },
      {
        method: "PATCH",
        path: "/fn/a%20b?q=é",
        headers: { "x-faas-request-id": "r-1", "x-odd": "caf\u00e9", empty: "" },
        body: [...body],
      },
    );
    assert.equal(
      decodeRequest(encodeRequest(1, { method: "GET", path: "/", headers: {}, body: null }).subarray(9)).body
        .length,
      0,
    );
  });

  it("carries a response's status, repeated headers and a string body encoded as UTF-8", () => {
    const frame = encodeResponse(
      9,
      201,
      { "set-cookie": ["a=1", "b=2"], "content-length": 12, "x-none": undefined },
      "héllo wörld",
    );
    const payload = frame.subarray(9);
    assert.equal(responseBodyBytes(payload), Buffer.byteLength("héllo wörld"));
    const res = decodeResponse(payload);
    assert.equal(res.status, 201);
    assert.deepEqual(res.headers, { "set-cookie": ["a=1", "b=2"], "content-length": "12" });
    assert.equal(res.body.toString("utf8"), "héllo wörld");
  });

  it("carries a console batch: levels, kinds, fn, rid, UTF-8 messages and the dropped count", () => {
    const frame = encodeConsole(
      [
        { type: "log", fn: "f", rid: "r1", level: "warn", msg: "ünïcode ✓" },
        { type: "fatal", fn: null, rid: null, level: "error", msg: "" },
        { type: "log", fn: "f", rid: "r2", level: "loud" as "info", msg: "x" },
      ],
      4,
    );
    assert.equal(frame[4], FrameType.console);
    assert.equal(frame.readUInt32BE(0), frame.length - 4);
    assert.deepEqual(decodeConsole(frame.subarray(9)), {
      dropped: 4,
      lines: [
        { type: "log", fn: "f", rid: "r1", level: "warn", msg: "ünïcode ✓" },
        { type: "fatal", fn: null, rid: null, level: "error", msg: "" },
        { type: "log", fn: "f", rid: "r2", level: "info", msg: "x" },
      ],
    });
  });

  it("reads frames split anywhere and several in one chunk", () => {
    const a = encodeResponse(1, 200, {}, "first");
    const b = encodeResponse(2, 200, {}, "second");
    const c = encodeConsole([{ type: "log", fn: "f", rid: "r", level: "info", msg: "m" }], 0);
    const all = Buffer.concat([a, b, c]);
    for (const step of [1, 2, 5, 9, 13, all.length]) {
      const { r, frames } = reader();
      for (let i = 0; i < all.length; i += step) r.push(all.subarray(i, i + step));
      assert.deepEqual(
        frames.map((f) => [f.type, f.id]),
        [
          [FrameType.response, 1],
          [FrameType.response, 2],
          [FrameType.console, 0],
        ],
        `chunks of ${step} bytes`,
      );
      assert.equal(decodeResponse(frames[1]!.payload).body.toString(), "second");
    }
  });

  // protection: FrameReader refuses a frame past its bound from the length prefix, before buffering it
  it("refuses a frame past its bound from its length alone, and reads nothing after it", () => {
    const { r, frames, refused } = reader(1000);
    const big = encodeResponse(3, 200, {}, "x".repeat(5000));
    r.push(big.subarray(0, 9));
    assert.deepEqual(refused, [[FrameType.response, 3, big.length - 4]]);
    r.push(encodeResponse(4, 200, {}, "ok"));
    assert.equal(frames.length, 0, "a stream past a refused frame cannot be trusted");
  });

  it("refuses a frame whose fields run past its end, naming the frame", () => {
    const frame = encodeRequest(1, { method: "GET", path: "/long/path", headers: { a: "b" }, body: null });
    assert.throws(() => decodeRequest(frame.subarray(9, 14)), ChannelProtocolError);
    const res = encodeResponse(1, 200, { a: "b" }, "body");
    res.writeUInt32BE(1, 11); // a head length that does not match its headers
    assert.throws(() => decodeResponse(res.subarray(9)), /head length does not match/);
    assert.throws(() => decodeConsole(Buffer.from([0, 0, 0, 0, 1, 0, 0, 9])), /console frame ends mid-field/);
  });
});
