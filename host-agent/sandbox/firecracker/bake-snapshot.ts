/**
 * The Firecracker half of the bake: boot the base image in a jail and a network slot (the same
 * layout every restore uses, so the paths and NIC in the vmstate fit every clone), wait for the guest
 * runtime, pause, take a Full snapshot, and collect vmstate + memory next to the bake inputs.
 */
import { chmod, chown, copyFile, link, mkdir, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { baseFiles } from "../../../contracts/base-layout.ts";
import type { FirecrackerDriverConfig } from "../../../contracts/firecracker-driver-config.ts";
import { FirecrackerApiClient } from "./api-client.ts";
import type { SlotProvider } from "./firecracker-driver.ts";
import { GuestChannel } from "./guest-channel.ts";
import type { IdRangeAllocator } from "./id-range.ts";
import { prepareJail, removeJail } from "./jail-staging.ts";
import { API_SOCKET_JAIL_PATH, buildJailerArgs, cgroupDir, jailPaths } from "./jailer-args.ts";
import { toRateLimiter } from "./limits.ts";
import type { NetworkSlot } from "./network-slots.ts";
import { bootVm, createSnapshot, pauseVm } from "./vm-lifecycle.ts";
import { type SpawnVmm, type VmmProcess, waitForApiSocket } from "./vmm-process.ts";

export interface BakeRequest {
  readonly id: string;
  /** Holds kernel.elf, root.img and code-empty.img (base-layout.ts names). */
  readonly inputsDir: string;
  /** Receives all five base files; may be the inputs folder itself. */
  readonly outDir: string;
  readonly bootArgs: string;
  /** Boot can take far longer than a restore. */
  readonly guestReadyTimeoutMs: number;
}

export interface BakeDeps {
  readonly config: FirecrackerDriverConfig;
  readonly spawnVmm: SpawnVmm;
  readonly slots: SlotProvider;
  readonly ids: IdRangeAllocator;
}

export interface BakeResult {
  /** InstanceStart to the guest runtime's first healthy answer. */
  readonly bootToReadyMs: number;
  readonly snapshotMs: number;
}

export async function bakeBaseSnapshot(request: BakeRequest, deps: BakeDeps): Promise<BakeResult> {
  const { config } = deps;
  const paths = jailPaths(config.chrootBase, config.firecrackerPath, request.id);
  const cgroupPath = cgroupDir(config.cgroupRoot, config.parentCgroup, request.id);
  const uid = deps.ids.acquire();
  let slot: NetworkSlot | undefined;
  let vmm: VmmProcess | undefined;
  let api: FirecrackerApiClient | undefined;
  try {
    slot = await deps.slots.acquire({ uid, gid: uid });
    const inputs = [baseFiles.kernel, baseFiles.rootDisk, baseFiles.codePlaceholder];
    await prepareJail(
      paths,
      { uid, gid: uid },
      inputs.map((f) => ({ source: join(request.inputsDir, f.name), jailPath: f.jailPath, readOnly: true })),
    );
    vmm = await deps.spawnVmm({
      id: request.id,
      jailerArgv: buildJailerArgs({
        id: request.id,
        execFile: config.firecrackerPath,
        uid,
        gid: uid,
        chrootBase: config.chrootBase,
        netnsPath: slot.netnsPath,
        newPidNs: config.newPidNs,
        daemonize: config.daemonize,
        parentCgroup: config.parentCgroup,
        // The bake gets no CPU quota: boot time is not on anyone's request path, and a tight quota only slows it.
        cgroups: [`memory.max=${(config.limits.memMiB + config.limits.vmmOverheadMiB) * 1024 * 1024}`],
        resourceLimits: [`fsize=${(config.limits.memMiB + 64) * 1024 * 1024}`, "no-file=2048"],
        apiSocket: API_SOCKET_JAIL_PATH,
      }),
      jailRoot: paths.root,
      apiSocketPath: paths.apiSocket,
      pidFilePath: paths.pidFile,
    });
    await waitForApiSocket(vmm, config.apiSocketTimeoutMs);
    api = new FirecrackerApiClient({ socketPath: paths.apiSocket });
    const l = config.limits;
    const t0 = performance.now();
    await bootVm(
      api,
      {
        bootArgs: request.bootArgs,
        vcpus: l.vcpus,
        memMiB: l.memMiB,
        ifaceId: config.network.ifaceId,
        tapName: slot.tapName,
        guestMac: config.network.guestMac,
        limiters: {
          rootDisk: toRateLimiter(l.rootDisk),
          codeDisk: toRateLimiter(l.codeDisk),
          networkRx: toRateLimiter(l.networkRx),
          networkTx: toRateLimiter(l.networkTx),
        },
      },
      baseFiles.kernel.jailPath,
    );
    await new GuestChannel(slot.cloneAddress, config.guestPort).waitHealthy(request.guestReadyTimeoutMs);
    const t1 = performance.now();
    await pauseVm(api);
    await createSnapshot(api, "Full");
    const t2 = performance.now();
    await collect(paths.root, request);
    return { bootToReadyMs: t1 - t0, snapshotMs: t2 - t1 };
  } finally {
    await vmm?.kill().catch(() => undefined);
    await api?.close().catch(() => undefined);
    await removeJail(paths, cgroupPath).catch(() => undefined);
    if (slot) await deps.slots.release(slot).catch(() => undefined);
    deps.ids.release(uid);
  }
}

/** Moves the snapshot out of the jail (and links the inputs) into outDir, root-owned and read-only. */
async function collect(jailRoot: string, request: BakeRequest): Promise<void> {
  await mkdir(request.outDir, { recursive: true });
  for (const f of [baseFiles.vmstate, baseFiles.memory]) {
    const from = join(jailRoot, f.jailPath);
    const to = join(request.outDir, f.name);
    await rename(from, to).catch(async () => copyFile(from, to));
    await chown(to, 0, 0);
    await chmod(to, 0o444);
  }
  if (request.outDir === request.inputsDir) return;
  for (const f of [baseFiles.kernel, baseFiles.rootDisk, baseFiles.codePlaceholder]) {
    const from = join(request.inputsDir, f.name);
    const to = join(request.outDir, f.name);
    if (
      await stat(to).then(
        () => true,
        () => false,
      )
    )
      continue;
    await link(from, to).catch(async () => copyFile(from, to));
  }
}
