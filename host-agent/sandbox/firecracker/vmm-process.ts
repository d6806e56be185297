import { stat } from "node:fs/promises";

/** A running Firecracker process (jailed, or a test double), as the driver sees it. */
export interface VmmExit {
  readonly code: number | null;
  readonly signal: string | null;
  /** What is known about why it ended, in one phrase. */
  readonly description: string;
}

export interface VmmProcess {
  /** Host pid when known (the daemonized Firecracker's pid from the jail's pid file). */
  readonly pid: number | undefined;
  /** Host path of the API socket. */
  readonly apiSocketPath: string;
  /** Resolves once when the process is gone. Never rejects. */
  readonly exited: Promise<VmmExit>;
  /** Ends the process (SIGKILL) and resolves once it is gone. Idempotent. */
  kill(): Promise<void>;
}

export interface VmmSpawnRequest {
  readonly id: string;
  /** Full jailer argv (without the jailer path itself). */
  readonly jailerArgv: readonly string[];
  /** Jail root on the host: `<chrootBase>/<exec name>/<id>/root`. */
  readonly jailRoot: string;
  /** Host path of the API socket inside the jail. */
  readonly apiSocketPath: string;
  /** Host path of the pid file the jailer writes. */
  readonly pidFilePath: string;
}

/** Starts a VMM for one jail; injected so tests run the strict fake instead of the jailer. */
export type SpawnVmm = (request: VmmSpawnRequest) => Promise<VmmProcess>;

/** Waits until the VMM's API socket exists (Firecracker binds it before serving); fails early if the VMM died. */
export async function waitForApiSocket(vmm: VmmProcess, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let died = false;
  void vmm.exited.then(() => {
    died = true;
  });
  while (performance.now() < deadline) {
    if (died)
      throw new Error(`firecracker exited before its API socket appeared: ${(await vmm.exited).description}`);
    if (
      await stat(vmm.apiSocketPath).then(
        () => true,
        () => false,
      )
    ) {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error(`API socket ${vmm.apiSocketPath} did not appear within ${timeoutMs} ms`);
}
