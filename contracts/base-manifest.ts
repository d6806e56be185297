/**
 * A base image's manifest.json: what a bake writes last (so a reader that sees it sees a complete set)
 * and what the agent checks before it restores anything. Its fields, the base version rule (a hash of
 * the bake's inputs) and the CPU model rule, written once for the bake and the agent.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "./canonical-json.ts";
import { describeZodIssues } from "./zod-errors.ts";

export const MANIFEST_FILE = "manifest.json";

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "a sha256 in lowercase hex (64 characters)");

/** A path relative to the base image directory, without "..", "." or empty components. */
const artifactName = z
  .string()
  .min(1)
  .refine(
    (name) =>
      name !== MANIFEST_FILE &&
      !name.startsWith("/") &&
      name.split("/").every((part) => part !== "" && part !== "." && part !== ".."),
    "a relative path inside the image directory (no '..', no leading '/', not manifest.json)",
  );

/** "1.16.1": the form `firecracker --version` reports, without the leading "v" or the name. */
const firecrackerVersion = z.string().regex(/^\d+\.\d+\.\d+$/, "a version like 1.16.1 (no leading v)");

export const ArtifactSchema = z.strictObject({
  name: artifactName,
  sha256: sha256Hex,
  bytes: z.number().int().nonnegative(),
});

export const ManifestSchema = z
  .strictObject({
    /** The base version: sha256 over the canonical JSON of `inputs` (see computeBaseVersion). */
    version: sha256Hex,
    driver: z.enum(["process", "firecracker"]),
    guest: z.enum(["osv", "linux", "process"]),
    /** What went into the bake, each as a sha256: recipe files, pinned versions, runtime bundle. */
    inputs: z.record(
      z.string().regex(/^[a-zA-Z0-9._-]+$/, "an input name of letters, digits, . _ -"),
      sha256Hex,
    ),
    artifacts: z.array(ArtifactSchema).min(1),
    /** Snapshots restore only on the Firecracker version that wrote them. */
    firecrackerVersion: firecrackerVersion.optional(),
    /**
     * The VMM that wrote the snapshot (firecracker driver only; absent = "firecracker", as every base
     * was before the QEMU backend): a QEMU snapshot does not restore under Firecracker, nor the reverse.
     */
    vmm: z.enum(["firecracker", "qemu"]).optional(),
    /** The VM shape the snapshot fixes; a restore gets exactly this, so a release must ask for it. */
    machine: z.strictObject({ vcpus: z.int().min(1), memMiB: z.int().min(1) }).optional(),
    /** CPU the bake ran on (/proc/cpuinfo "model name"): a snapshot restores safely only on the same model. */
    cpuModel: z.string().min(1),
    /** The guest kernel command line the snapshot was booted with ("" for the process sandbox). */
    kernelArgs: z.string(),
    /** Guest network the snapshot was taken with: every restore needs a tap of this name, guest at this IP. */
    network: z
      .strictObject({
        tapName: z.string().min(1).max(15),
        guestIp: z.ipv4(),
        hostIp: z.ipv4(),
        guestMac: z.mac(),
      })
      .optional(),
    createdAt: z.iso.datetime(),
  })
  .superRefine((m, ctx) => {
    if (m.driver === "firecracker") {
      if (m.firecrackerVersion === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["firecrackerVersion"],
          message: "required when driver is firecracker",
        });
      }
      if (m.guest === "process") {
        ctx.addIssue({
          code: "custom",
          path: ["guest"],
          message: 'must be "osv" or "linux" when driver is firecracker',
        });
      }
    } else {
      if (m.guest !== "process") {
        ctx.addIssue({
          code: "custom",
          path: ["guest"],
          message: 'must be "process" when driver is process',
        });
      }
      if (m.firecrackerVersion !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["firecrackerVersion"],
          message: "only allowed when driver is firecracker",
        });
      }
      if (m.vmm !== undefined) {
        ctx.addIssue({ code: "custom", path: ["vmm"], message: "only allowed when driver is firecracker" });
      }
    }
    const seen = new Set<string>();
    m.artifacts.forEach((artifact, i) => {
      if (seen.has(artifact.name)) {
        ctx.addIssue({
          code: "custom",
          path: ["artifacts", i, "name"],
          message: `duplicate artifact ${artifact.name}`,
        });
      }
      seen.add(artifact.name);
    });
  });

export type Manifest = z.infer<typeof ManifestSchema>;
export type SnapshotVmm = NonNullable<Manifest["vmm"]>;
export type Artifact = z.infer<typeof ArtifactSchema>;

/** Base version = sha256 over the canonical JSON of the input hashes: same inputs, same version. */
export function computeBaseVersion(inputs: Readonly<Record<string, string>>): string {
  return createHash("sha256").update(canonicalJson(inputs)).digest("hex");
}

/**
 * The host CPU model as the bake records it (`cpuModel`) and the agent compares it at start: the first
 * "model name" of /proc/cpuinfo text, or "unknown" when it has none. A Firecracker snapshot restores
 * safely only on the CPU model it was taken on.
 */
export function cpuModelOf(cpuinfo: string): string {
  const match = /^model name\s*:\s*(.+)$/m.exec(cpuinfo);
  return match?.[1]?.trim() || "unknown";
}

export class ManifestError extends Error {
  override readonly name = "ManifestError";
}

/** Parses a manifest, with one line per problem naming the key path and what is allowed. */
export function parseManifest(json: unknown, source: string): Manifest {
  const result = ManifestSchema.safeParse(json);
  if (!result.success) {
    const lines = describeZodIssues(result.error.issues).map((line) => `  ${line}`);
    throw new ManifestError(`invalid base image manifest ${source}:\n${lines.join("\n")}`);
  }
  return result.data;
}

/** Normalises `firecracker --version` output ("Firecracker v1.16.1\n...") or "v1.16.1" to "1.16.1". */
export function normaliseFirecrackerVersion(text: string): string {
  const match = /v?(\d+\.\d+\.\d+)/.exec(text);
  if (!match?.[1]) throw new ManifestError(`cannot read a Firecracker version from "${text.trim()}"`);
  return match[1];
}
