/**
 * Host side of the channel to the guest runtime inside a VM: HTTP over TCP to the slot's clone
 * address (NATed to the guest IP). After a restore nothing from the bake survives on the host side,
 * so the channel is new for every instance; /_faas/init then gives the guest a fresh identity, the
 * current wall clock (a restored guest clock resumes at bake time), a new entropy seed (every
 * clone starts from the same memory image, including its random state) and its control secret.
 */
import { request } from "undici";
import type { InitRequest } from "../../../contracts/guest-protocol.ts";

/** What the driver sends at init: the runtime protocol's init, with the secret always set. */
export type GuestInit = InitRequest & { readonly controlSecret: string };

export class GuestChannelError extends Error {
  override readonly name = "GuestChannelError";
}

export class GuestChannel {
  private readonly base: string;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {
    this.base = `http://${host}:${port}`;
  }

  /** Polls /_faas/health until it answers 2xx; a restored guest answers within milliseconds. */
  async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let delay = 1;
    let lastProblem = "no answer";
    while (performance.now() < deadline) {
      const remaining = Math.max(1, deadline - performance.now());
      try {
        const res = await request(`${this.base}/_faas/health`, {
          method: "GET",
          // Closed after the answer: a bake snapshots right after this call, and a connection still
          // open then would be resumed, half-dead, by every clone (in each guest's socket table).
          reset: true,
          headersTimeout: Math.min(remaining, 1_000),
          bodyTimeout: Math.min(remaining, 1_000),
        });
        await res.body.text();
        if (res.statusCode >= 200 && res.statusCode < 300) return;
        lastProblem = `health answered ${res.statusCode}`;
      } catch (err) {
        lastProblem = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, remaining)));
      delay = Math.min(delay * 2, 25);
    }
    throw new GuestChannelError(
      `guest runtime at ${this.base} did not become healthy within ${timeoutMs} ms (${lastProblem})`,
    );
  }

  /** Sends identity, clock and entropy; the guest must accept before the instance is handed out. */
  async init(body: GuestInit, timeoutMs: number): Promise<void> {
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${this.base}/_faas/init`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        // One call per instance: no idle connection to keep to it.
        reset: true,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw new GuestChannelError(
        `guest runtime at ${this.base} did not take /_faas/init: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const text = await res.body.text();
    if (res.statusCode < 200 || res.statusCode >= 300) {
      throw new GuestChannelError(
        `guest runtime refused /_faas/init with ${res.statusCode}: ${text.slice(0, 300)}`,
      );
    }
  }
}
