import { MANIFEST_FILE } from "../../contracts/base-manifest.ts";
import type { Plan } from "./plan.ts";

/**
 * Upload of a baked base image to the artifact store (S3 API, via the aws CLI on the builder host).
 * Artifacts first, manifest.json last: an agent that finds a manifest in the store finds every
 * artifact it names.
 */
export function uploadPlan(imageDir: string, version: string, storeUrl: string): Plan {
  if (!/^s3:\/\/[a-z0-9.-]{3,63}(\/.*)?$/.test(storeUrl)) {
    throw new Error(`artifact store URL must look like s3://bucket[/prefix], got "${storeUrl}"`);
  }
  const target = `${storeUrl.replace(/\/+$/, "")}/${version}`;
  return {
    title: `upload base image ${version} to ${target}`,
    workDir: imageDir,
    steps: [
      {
        step: "upload-artifacts",
        argv: [
          "aws",
          "s3",
          "cp",
          "--recursive",
          "--only-show-errors",
          "--exclude",
          MANIFEST_FILE,
          imageDir,
          `${target}/`,
        ],
        needs: ["internet"],
      },
      {
        step: "upload-manifest",
        argv: [
          "aws",
          "s3",
          "cp",
          "--only-show-errors",
          `${imageDir}/${MANIFEST_FILE}`,
          `${target}/${MANIFEST_FILE}`,
        ],
        needs: ["internet"],
        why: "last, so the manifest never names an artifact the store does not have yet",
      },
    ],
  };
}
