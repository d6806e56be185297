/**
 * `npm run guest:osv`: builds (or finds cached) the OSv guest image on this machine for the QEMU/TCG
 * suite (test/vm/osv-guest.test.ts), from the pinned OSv source tarball. Without it (no
 * ../shared/vendor, no OSV_SOURCE_TARBALL) it says so in one line and exits 0: the suite then skips
 * with the same reason.
 */
import { OsvImageUnavailable, osvGuestImage, osvSourceTarball } from "./local-image.ts";

if (!osvSourceTarball()) {
  console.log(
    "guest:osv: skipped, no OSv source tarball (set OSV_SOURCE_TARBALL or provide ../shared/vendor/)",
  );
  process.exit(0);
}
try {
  const image = await osvGuestImage({ log: (line) => console.log(line) });
  console.log(`guest:osv: kernel ${image.kernel}`);
  console.log(`guest:osv: root ${image.root} (node ${image.nodeVersion}, runtime ${image.runtimeBuild})`);
} catch (err) {
  console.error(
    `guest:osv: ${err instanceof OsvImageUnavailable ? "" : "build failed: "}${(err as Error).message}`,
  );
  process.exit(1);
}
