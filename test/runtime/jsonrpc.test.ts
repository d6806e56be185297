import assert from "node:assert/strict";
import {
  dispatchRpc,
  exportedClasses,
  INVALID_REQUEST,
  isAnswer,
  METHOD_NOT_FOUND,
  PARSE_ERROR,
  parseRpcRequest,
  type RpcCall,
  SERVER_ERROR,
} from "../../guest-images/runtime/jsonrpc.ts";

class Greeter {
  private count = 0;
  hello(name: string) {
    this.count++;
    return `hi ${name} #${this.count}`;
  }
  async later(x: number) {
    return x * 2;
  }
  nothing() {}
  fail() {
    throw new Error("user says no");
  }
  _secret() {
    return "hidden";
  }
}

const classes = exportedClasses({ Greeter, notAClass: () => 1, value: 3, default: class Other {} });

async function run(body: unknown, instances = new Map<string, unknown>()) {
  const parsed = parseRpcRequest(typeof body === "string" ? body : JSON.stringify(body));
  return isAnswer(parsed) ? parsed : dispatchRpc(parsed as RpcCall, classes, instances);
}

describe("JSON-RPC 2.0 over exported classes", () => {
  it("finds exported classes by export name and class name, ignoring functions and values", () => {
    assert.deepEqual([...classes.keys()].sort(), ["Greeter", "Other"]);
  });

  it("calls a sync method and answers in the Genezio shape", async () => {
    const a = await run({ jsonrpc: "2.0", method: "Greeter.hello", params: ["Ada"], id: 7 });
    assert.deepEqual(a, { status: 200, body: { jsonrpc: "2.0", result: "hi Ada #1", error: null, id: 7 } });
  });

  it("awaits async methods, maps undefined to null, keeps one instance per class", async () => {
    const instances = new Map<string, unknown>();
    assert.equal(
      (await run({ jsonrpc: "2.0", method: "Greeter.later", params: [21], id: 1 }, instances)).body.result,
      42,
    );
    assert.equal(
      (await run({ jsonrpc: "2.0", method: "Greeter.nothing", id: 2 }, instances)).body.result,
      null,
    );
    await run({ jsonrpc: "2.0", method: "Greeter.hello", params: ["a"], id: 3 }, instances);
    const again = await run({ jsonrpc: "2.0", method: "Greeter.hello", params: ["b"], id: 4 }, instances);
    assert.equal(again.body.result, "hi b #2");
  });

  it("answers -32700 to a body that is not JSON", async () => {
    const a = await run("{oops");
    assert.equal(a.status, 400);
    assert.equal((a.body.error as { code: number }).code, PARSE_ERROR);
    assert.equal(a.body.id, null);
  });

  for (const [what, body] of [
    ["a wrong version", { jsonrpc: "1.0", method: "Greeter.hello", id: 1 }],
    ["a missing method", { jsonrpc: "2.0", id: 1 }],
    ["a method without a class", { jsonrpc: "2.0", method: "hello", id: 1 }],
    ["params that are not an array", { jsonrpc: "2.0", method: "Greeter.hello", params: { a: 1 }, id: 1 }],
    ["an id that is an object", { jsonrpc: "2.0", method: "Greeter.hello", id: {} }],
    ["a batch", [{ jsonrpc: "2.0", method: "Greeter.hello", id: 1 }]],
  ] as const) {
    it(`answers -32600 to ${what}`, async () => {
      const a = await run(body);
      assert.equal(a.status, 400);
      assert.equal((a.body.error as { code: number }).code, INVALID_REQUEST);
    });
  }

  it("answers -32601 to unknown classes, unknown methods and private ones", async () => {
    for (const method of ["Nope.hello", "Greeter.nope", "Greeter._secret", "Greeter.constructor"]) {
      const a = await run({ jsonrpc: "2.0", method, id: 1 });
      assert.equal((a.body.error as { code: number }).code, METHOD_NOT_FOUND, method);
      assert.equal(a.status, 404);
    }
  });

  it("turns a user throw into a server error carrying the message", async () => {
    const a = await run({ jsonrpc: "2.0", method: "Greeter.fail", id: 9 });
    assert.deepEqual(a, {
      status: 500,
      body: { jsonrpc: "2.0", error: { code: SERVER_ERROR, message: "user says no" }, id: 9 },
    });
  });
});
