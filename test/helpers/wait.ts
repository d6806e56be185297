/** Polls until `ok()` holds, for what arrives on its own time (log lines over a pipe, processes exiting). */
export async function waitFor(what: string, ok: () => boolean, ms = 10_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
