/**
 * A sandbox driver double for pool tests: instances are plain objects whose guest client answers load
 * calls from a script, so the pool's decisions can be checked exactly and with a fake clock.
 */
import type { LoadResponse } from "../../contracts/guest-protocol.ts";
import { GuestClient, GuestError } from "../../host-agent/guest/client.ts";
import type {
  CodeArtifact,
  InstanceSpec,
  PreflightProblem,
  SandboxDriver,
  SandboxExit,
  SandboxInstance,
} from "../../host-agent/sandbox/driver.ts";

export class FakeInstance implements SandboxInstance {
  readonly endpoint = { kind: "unix" as const, socketPath: "/nonexistent" };
  readonly exited: Promise<SandboxExit>;
  attached: CodeArtifact | undefined;
  destroyedWith: string | undefined;
  private resolveExit!: (e: SandboxExit) => void;

  constructor(
    readonly id: string,
    readonly base: InstanceSpec["base"],
    /** Where the driver notes what happened to its instances, in order. */
    private readonly events: string[] = [],
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  async attachCode(code: CodeArtifact): Promise<void> {
    this.attached = code;
  }

  async destroy(reason: string): Promise<void> {
    if (this.destroyedWith === undefined) {
      this.destroyedWith = reason;
      this.events.push(`destroy ${this.id}`);
      this.resolveExit({ cause: "destroyed", code: null, signal: "SIGKILL", reason });
    }
    await this.exited;
  }

  /** The guest dies on its own. */
  crash(reason: string): void {
    this.resolveExit({ cause: "exited", code: 70, signal: null, reason });
  }
}

export class FakeDriver implements SandboxDriver {
  readonly kind = "process" as const;
  readonly started: FakeInstance[] = [];
  /** Starts wait on this gate when set, so tests can hold them "in flight". */
  gate: Promise<void> | undefined;
  failStarts = false;
  /** Base versions whose starts fail (a broken base next to a good one). */
  readonly failingBases = new Set<string>();
  /** Function names whose load fails. */
  readonly brokenFunctions = new Set<string>();
  /** Console flushes and destroys, in the order the pool asked for them. */
  readonly events: string[] = [];

  async preflight(): Promise<PreflightProblem[]> {
    return [];
  }

  async init(): Promise<void> {}

  async start(spec: InstanceSpec): Promise<SandboxInstance> {
    if (this.gate) await this.gate;
    if (this.failStarts) throw new Error("fake start failure");
    if (this.failingBases.has(spec.base.version)) throw new Error(`base ${spec.base.version} does not start`);
    const i = new FakeInstance(spec.id, spec.base, this.events);
    this.started.push(i);
    return i;
  }

  async close(): Promise<void> {
    await Promise.all(this.started.map((i) => i.destroy("closed")));
  }

  get alive(): FakeInstance[] {
    return this.started.filter((i) => i.destroyedWith === undefined);
  }

  /** The guest client the pool uses for a fake instance: loads succeed unless the function is broken. */
  clientFor = (sandbox: SandboxInstance): GuestClient => {
    const driver = this;
    const client = Object.create(GuestClient.prototype) as GuestClient;
    Object.assign(client, {
      async load(body: { functionName: string }): Promise<LoadResponse> {
        if (driver.brokenFunctions.has(body.functionName)) throw new GuestError("boom at load", "load", 422);
        return { functionName: body.functionName, style: "jsonrpc", initMs: 1, classes: ["X"] };
      },
      async health() {
        return {
          status: "ok",
          baseVersion: sandbox.base.version,
          runtimeBuild: "fake",
          instanceId: sandbox.id,
          functionName: null,
          pid: 1,
        };
      },
      async close() {},
      async flushConsole() {
        driver.events.push(`flush ${sandbox.id}`);
      },
      sandboxId: sandbox.id,
    });
    return client;
  };
}
