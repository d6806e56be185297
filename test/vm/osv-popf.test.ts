/**
 * The popf stress check in the QEMU/TCG lane: guest-images/osv/check-popf.sh boots the cached OSv
 * image on QEMU's `pc` machine with /node /popf/stress.cjs as the application, under its host-side
 * watchdog. What this asserts is what the README claims: the check runs and ends with a verdict the
 * script reports by its exit code (0 PASS, 1 FAIL from the guest, 2 no verdict: the guest hung or
 * crashed, with its console tail). The verdict itself is printed, not asserted: under TCG OSv aborts
 * within seconds ("page fault with interrupts disabled", guest-images/osv/README.md), a known OSv
 * defect that keeps the OSv guest experimental; it must not turn CI red, and a pass must not either.
 * Needs qemu-system-x86_64 and the cached OSv image (`npm run guest:osv`).
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import {
  type OsvGuestImage,
  OsvImageUnavailable,
  osvGuestImage,
} from "../../guest-images/osv/local-image.ts";
import { OSV_GUEST_PATHS } from "../../guest-images/osv/recipe.ts";
import { requireQemu } from "../firecracker/qemu-helpers.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Long enough for the abort the research saw (1.8-2.3 s into the check), short for CI. */
const CHECK_SECONDS = 20;

describe("OSv popf stress check under QEMU/TCG (pc)", function () {
  this.timeout(CHECK_SECONDS * 1000 + 300_000);
  let image: OsvGuestImage;
  let work: string | undefined;

  before(async function () {
    requireQemu(this, false);
    try {
      image = await osvGuestImage({ build: "image" });
    } catch (err) {
      if (!(err instanceof OsvImageUnavailable)) throw err;
      console.log(`      skipped: ${err.message}`);
      this.skip();
    }
    work = await mkdtemp(path.join(tmpdir(), "osv-popf-"));
  });

  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("runs the check in the image and reports a verdict by its exit code", async () => {
    const consoleFile = path.join(work!, "console.log");
    const started = Date.now();
    const run = await execa(
      "bash",
      [
        path.join(REPO, "guest-images/osv/check-popf.sh"),
        "qemu-system-x86_64",
        path.dirname(image.kernel),
        OSV_GUEST_PATHS.popfCheck,
        String(CHECK_SECONDS),
      ],
      { reject: false, all: true, env: { POPF_CONSOLE: consoleFile } },
    );
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    const console_ = await readFile(consoleFile, "utf8").catch(() => "");
    const abort = /Assertion failed:.*|page fault.*|Aborted.*/.exec(console_)?.[0];
    const verdict = { 0: "PASS", 1: "FAIL (reported by the guest)", 2: "no verdict (hang or crash)" }[
      run.exitCode as 0 | 1 | 2
    ];
    console.log(
      `      popf check (${CHECK_SECONDS} s asked, ${seconds} s wall): exit ${run.exitCode}, ${verdict}`,
    );
    if (abort) console.log(`      guest console: ${abort.trim()}`);
    assert.ok(verdict, `check-popf.sh exits 0, 1 or 2, got ${run.exitCode}:\n${run.all}`);
    // The script's own line, naming the VMM and what the console said.
    assert.match(run.all ?? "", /qemu-system-x86_64 exit \d+; /);
    if (run.exitCode === 2) assert.match(run.all ?? "", /no verdict: the guest hung or crashed/);
    else assert.match(console_, /POPF-CHECK (PASS|FAIL)/);
  });
});
