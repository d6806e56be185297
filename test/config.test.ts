import assert from "node:assert/strict";
import { ConfigError, loadAgentConfig } from "../host-agent/config.ts";

describe("agent configuration", () => {
  it("has the documented defaults", () => {
    const c = loadAgentConfig({});
    assert.equal(c.port, 8080);
    assert.equal(c.adminPort, 8081);
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.adminHost, "127.0.0.1", "the admin API stays on loopback unless configured");
    assert.equal(c.stateDir, ".faas");
    assert.equal(c.pool.callTimeoutMs, 30_000);
    assert.equal(c.pool.genericMin, 2);
    assert.equal(c.bundle.maxBundleBytes, 50 * 1024 * 1024);
    assert.equal(c.bundle.maxUnpackedBytes, 250 * 1024 * 1024);
  });

  it("reads numbers from the environment", () => {
    const c = loadAgentConfig({ PORT: "9000", FAAS_POOL_GENERIC: "5", FAAS_INSTANCE_MEMORY_MIB: "512" });
    assert.equal(c.port, 9000);
    assert.equal(c.pool.genericMin, 5);
    assert.equal(c.limits.memoryMiB, 512);
  });

  it("names every bad variable, its value and what is allowed", () => {
    assert.throws(
      () => loadAgentConfig({ PORT: "http", FAAS_CALL_TIMEOUT_MS: "5", FAAS_ADMIN_TOKEN: "short" }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /PORT="http": .*number/);
        assert.match(err.message, /FAAS_CALL_TIMEOUT_MS="5": .*>=100/);
        assert.match(err.message, /FAAS_ADMIN_TOKEN="short": must be at least 16 characters/);
        return true;
      },
    );
  });

  it("refuses the same port for both planes", () => {
    assert.throws(() => loadAgentConfig({ PORT: "9000", ADMIN_PORT: "9000" }), /must differ/);
  });
});
