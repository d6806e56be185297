/**
 * `faas start` with FAAS_DRIVER=firecracker and no FAAS_BASE_DIR: a Linux base baked on this machine
 * on the QEMU backend (no Firecracker binary, no KVM needed), from the guest image `npm run guest:linux`
 * caches. The bake is guest-images/linux/local-base.ts (the pipeline: manifest, one rename) around the driver's own
 * (bakeBaseSnapshot: boot, health, pause, snapshot), keyed by a version over every input, so a restart
 * reuses the base and a new kernel, rootfs, QEMU or driver source bakes a new one. The driver config it
 * writes is the one the agent then runs with, so the bake and every restore share one network layout.
 *
 *   <state dir>/local-vm/driver.json        the driver config (vmm qemu)
 *   <state dir>/local-vm/bases/<version>/   the baked base (manifest.json and the five base files)
 *   <state dir>/local-vm/jails/             the VMs' jails
 */
import { createHash } from "node:crypto";
import { chmod, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../contracts/firecracker-driver-config.ts";
import { bakeLocalLinuxBase, LinuxImageUnavailable } from "../../guest-images/linux/local-base.ts";
import { execaRunner } from "../sandbox/command-runner.ts";
import { bakeBaseSnapshot } from "../sandbox/firecracker/bake-snapshot.ts";
import { spawnerFor } from "../sandbox/firecracker/create-driver.ts";
import { IdRangeAllocator } from "../sandbox/firecracker/id-range.ts";
import { removeParentCgroup } from "../sandbox/firecracker/jail-staging.ts";
import { NetworkSlotPool } from "../sandbox/firecracker/network-slots.ts";
import { QEMU_ADAPTER_API_VERSION } from "../sandbox/firecracker/qemu-vmm.ts";
import { defaultUplink, hostResolver } from "../sandbox/host-uplink.ts";
import { CliError } from "./admin-client.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Every code disk is this size (the placeholder's): QEMU cannot grow a drive under a restored guest. */
const CODE_DISK_BYTES = 8 * 1024 * 1024;
/** The driver's files that shape what the bake writes (boot, snapshot, the QEMU adapter and spawner). */
const BAKE_SOURCES = [
  "bake-snapshot.ts",
  "jail-staging.ts",
  "jailer-args.ts",
  "vm-lifecycle.ts",
  "qemu-vmm.ts",
  "qemu-spawner.ts",
  "qemu-argv.ts",
].map((f) => path.join(REPO, "host-agent/sandbox/firecracker", f));
const ACCELERATORS = ["tcg", "kvm", "auto"] as const;

export interface LocalVmBase {
  /** The baked, verified base folder (FAAS_BASE_DIR). */
  readonly baseDir: string;
  /** The driver config the agent runs with (FAAS_FIRECRACKER_CONFIG). */
  readonly configFile: string;
  readonly version: string;
  readonly reused: boolean;
}

/**
 * Names and addresses of one local platform's host resources, from its state dir: two agents on one
 * machine (a `faas start` and a test, two checkouts) never reclaim each other's network namespaces,
 * veths or cgroups. The subnet is one of 1024 /26 blocks of 10.206.0.0/16 (16 slots of a /30 each).
 */
export function localVmHostNames(stateDir: string): {
  netnsPrefix: string;
  vethPrefix: string;
  parentCgroup: string;
  hostSubnetBase: string;
} {
  const tag = createHash("sha256").update(path.resolve(stateDir)).digest("hex").slice(0, 5);
  const block = Number.parseInt(tag, 16) % 1024;
  return {
    netnsPrefix: `sfl${tag}`,
    vethPrefix: `sfv${tag}`,
    parentCgroup: `snapfaas-local-${tag}`,
    hostSubnetBase: `10.206.${block >> 2}.${(block & 3) * 64}`,
  };
}

/** Where the local microVMs' functions with egress go out: the host's own uplink and resolver. */
export interface LocalVmEgress {
  readonly uplink: string;
  readonly dnsResolver: string;
}

/**
 * The uplink and resolver the local microVMs' egress uses: FAAS_EGRESS_UPLINK and FAAS_EGRESS_DNS (as
 * for the process sandbox), else the host's default route and resolv.conf. Undefined when the host has
 * either missing: no function can then have egress, and a deploy asking for it gets a 409 saying why.
 */
export async function localVmEgress(env: NodeJS.ProcessEnv): Promise<LocalVmEgress | undefined> {
  const uplink = env.FAAS_EGRESS_UPLINK || (await defaultUplink(execaRunner));
  const dnsResolver = env.FAAS_EGRESS_DNS || (await hostResolver());
  return uplink && dnsResolver ? { uplink, dnsResolver } : undefined;
}

/** The driver config of the local microVM platform: QEMU, jails and cgroups of its own, a small pool. */
export function localVmDriverConfig(
  stateDir: string,
  accelerator: (typeof ACCELERATORS)[number],
  egress?: LocalVmEgress,
): Record<string, unknown> {
  const names = localVmHostNames(stateDir);
  return {
    vmm: "qemu",
    qemu: { accelerator },
    chrootBase: path.join(stateDir, "local-vm", "jails"),
    cgroupRoot: "/sys/fs/cgroup",
    parentCgroup: names.parentCgroup,
    // A TCG boot takes tens of seconds; a restore and the runtime's first answer several.
    guestReadyTimeoutMs: 240_000,
    apiSocketTimeoutMs: 10_000,
    network: {
      netnsPrefix: names.netnsPrefix,
      vethPrefix: names.vethPrefix,
      hostSubnetBase: names.hostSubnetBase,
      poolSize: 4,
      maxSlots: 16,
      // Every slot's gate starts closed: only a function deployed with egress opens its VM's.
      egress: egress ? { enabled: true, ...egress } : { enabled: false },
    },
  };
}

/** FAAS_VMM and FAAS_VMM_ACCELERATOR, checked: the local bake runs only on the QEMU backend. */
export function localVmChoice(env: NodeJS.ProcessEnv): { accelerator: (typeof ACCELERATORS)[number] } {
  const vmm = env.FAAS_VMM ?? "qemu";
  if (vmm !== "qemu") {
    throw new CliError(
      vmm === "firecracker"
        ? "FAAS_VMM=firecracker needs a base baked for Firecracker: set FAAS_BASE_DIR and FAAS_FIRECRACKER_CONFIG (a local bake runs only with FAAS_VMM=qemu)"
        : `FAAS_VMM must be "qemu" or "firecracker", not "${vmm}"`,
    );
  }
  // TCG by default: it runs anywhere, and KVM may be present but unable to run guests (check with `faas doctor`).
  const accelerator = env.FAAS_VMM_ACCELERATOR ?? "tcg";
  if (!(ACCELERATORS as readonly string[]).includes(accelerator))
    throw new CliError(
      `FAAS_VMM_ACCELERATOR must be one of ${ACCELERATORS.join(", ")}, not "${accelerator}"`,
    );
  return { accelerator: accelerator as (typeof ACCELERATORS)[number] };
}

async function qemuVersion(config: FirecrackerDriverConfig): Promise<string> {
  const got = await execa(config.qemu.path, ["--version"], { reject: false });
  if (got.exitCode !== 0)
    throw new CliError(
      `${config.qemu.path} does not run (${String(got.stderr || got.message).split("\n")[0]}): apt-get install qemu-system-x86`,
    );
  return got.stdout.split("\n")[0]?.trim() ?? "";
}

/** Bakes (or reuses) the local base and writes the driver config; progress goes to `log`. */
export async function localVmBase(
  stateDir: string,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<LocalVmBase> {
  const { accelerator } = localVmChoice(env);
  if (process.getuid?.() !== 0)
    throw new CliError("microVMs need root (jails, network namespaces, cgroups): run `faas start` as root");
  const root = path.join(stateDir, "local-vm");
  const egress = await localVmEgress(env);
  log(
    egress
      ? `microVMs: functions deployed with --egress go out of ${egress.uplink}, DNS to ${egress.dnsResolver}; the others reach nothing`
      : "microVMs: no function can have egress (no default route or resolver: set FAAS_EGRESS_UPLINK and FAAS_EGRESS_DNS)",
  );
  const rawConfig = localVmDriverConfig(stateDir, accelerator, egress);
  const config = parseFirecrackerDriverConfig(rawConfig);
  const spawnVmm = spawnerFor(config);
  let baked: Awaited<ReturnType<typeof bakeLocalLinuxBase>>;
  try {
    baked = await bakeLocalLinuxBase(path.join(root, "bases"), {
      driverConfig: config,
      firecrackerVersion: QEMU_ADAPTER_API_VERSION,
      vmm: "qemu",
      vmmInputs: {
        vmm: sha256OfText(JSON.stringify({ qemu: await qemuVersion(config), accelerator })),
        bake: await sha256OfFiles(BAKE_SOURCES),
      },
      codeDiskBytes: CODE_DISK_BYTES,
      env,
      log,
      // The README's one line works on a fresh machine: a cold guest build first (progress on log).
      buildImage: true,
      async snapshot(dir, kernelArgs) {
        log(
          `bake: booting the Linux guest on QEMU (${accelerator}) to snapshot it: about 10 s on an idle host under TCG, longer on a busy one`,
        );
        // The bake's own slots, closed before the agent builds its pool over the same prefixes.
        const slots = new NetworkSlotPool(config.network, execaRunner);
        await slots.reclaim();
        try {
          const result = await bakeBaseSnapshot(
            {
              id: "local-bake",
              inputsDir: dir,
              outDir: dir,
              bootArgs: kernelArgs,
              guestReadyTimeoutMs: 300_000,
            },
            { config, spawnVmm, slots, ids: new IdRangeAllocator(config.idRange.first, 1) },
          );
          log(
            `bake: guest ready after ${(result.bootToReadyMs / 1000).toFixed(1)} s, snapshot in ${(result.snapshotMs / 1000).toFixed(1)} s`,
          );
        } finally {
          await slots.close();
          // The VMs' parent cgroup is made again by the agent's first restore; a failed bake leaves none.
          await removeParentCgroup(config.cgroupRoot, config.parentCgroup);
        }
      },
    });
  } catch (err) {
    if (err instanceof LinuxImageUnavailable)
      throw new CliError(`cannot build the Linux guest image on this machine: ${err.message}`);
    throw err;
  }
  // Only this agent restores from these bases, and only from the current one: earlier bakes (each the
  // size of a rootfs plus the guest's memory) go.
  for (const entry of await readdir(path.join(root, "bases"))) {
    if (!/^[0-9a-f]{64}$/.test(entry) || entry === baked.manifest.version) continue;
    await rm(path.join(root, "bases", entry), { recursive: true, force: true });
    log(`bake: removed the earlier local base ${entry}`);
  }
  // QEMU is not chrooted: VM uids walk down from / to their jails and the base's files.
  await chmod(root, 0o755);
  const configFile = path.join(root, "driver.json");
  await writeFile(configFile, `${JSON.stringify(rawConfig, null, 2)}\n`);
  return { baseDir: baked.dir, configFile, version: baked.manifest.version, reused: baked.reused };
}

async function sha256OfFiles(files: readonly string[]): Promise<string> {
  const entries: Record<string, string> = {};
  for (const file of files)
    entries[path.relative(REPO, file)] = createHash("sha256")
      .update(await readFile(file))
      .digest("hex");
  return sha256OfText(JSON.stringify(Object.entries(entries).sort()));
}

function sha256OfText(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Pool sizes for TCG, where every VM is an emulated CPU on this host's cores: one warm instance, a few
 * at most, calls and warm-ups given minutes. The environment's own values win.
 */
export const localVmPoolDefaults: Readonly<Record<string, string>> = {
  FAAS_POOL_GENERIC: "1",
  FAAS_POOL_GENERIC_MAX: "2",
  FAAS_POOL_MAX_INSTANCES: "3",
  FAAS_POOL_MAX_STARTING: "1",
  FAAS_CALL_TIMEOUT_MS: "120000",
  FAAS_ROLL_WARMUP_TIMEOUT_MS: "600000",
};
