/**
 * A process sandbox base as the process bake (guest-images/process/bake.ts) leaves it in its folder and
 * the agent's base check (host-agent/release/base-check.ts) reads it: base.json beside a read-only root.
 */
import type { BaseImage } from "./base-layout.ts";
import type { NativeAddonAbi } from "./native-addons.ts";

/** The base's record, at <base dir>/base.json. */
export const PROCESS_BASE_INFO_FILE = "base.json";
/** The jail's read-only root, at <base dir>/root. */
export const PROCESS_BASE_ROOT = "root";

export interface ProcessBaseInfo {
  readonly version: string;
  readonly driver: "process";
  readonly nodeVersion: string;
  readonly runtimeBuild: string;
  /** What native addons it can load (absent in bases baked before addons were checked). */
  readonly nativeAddons?: NativeAddonAbi;
  readonly inputs: Record<string, string>;
  readonly createdAt: string;
}

export interface ProcessBase extends BaseImage {
  readonly driver: "process";
  /** The jail's read-only root. */
  readonly rootDir: string;
  readonly runtimeBuild: string;
  readonly nodeVersion: string;
}
