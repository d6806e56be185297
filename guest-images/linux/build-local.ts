/**
 * `npm run guest:linux`: builds (or finds cached) the Linux guest kernel and rootfs on this machine
 * for the QEMU/TCG boot suite (test/vm/linux-guest-boot.test.ts). Without Firecracker's guest config
 * (no ../shared/vendor, no FIRECRACKER_GUEST_CONFIG) it says so in one line and exits 0: the boot
 * suite then skips with the same reason.
 */
import { firecrackerGuestConfig, LinuxImageUnavailable, linuxGuestImage } from "./local-image.ts";

const log = (line: string) => console.log(line);
if (!firecrackerGuestConfig()) {
  console.log(
    "guest:linux: skipped, no Firecracker guest kernel config (set FIRECRACKER_GUEST_CONFIG or provide ../shared/vendor/)",
  );
  process.exit(0);
}
try {
  const image = await linuxGuestImage({ build: "all", log });
  console.log(`guest:linux: kernel ${image.kernel}`);
  console.log(
    `guest:linux: rootfs ${image.rootfs} (node ${image.nodeVersion}, runtime ${image.runtimeBuild})`,
  );
} catch (err) {
  console.error(
    `guest:linux: ${err instanceof LinuxImageUnavailable ? "" : "build failed: "}${(err as Error).message}`,
  );
  process.exit(1);
}
