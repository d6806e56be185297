/**
 * `faas ls | head -1`: once the reader of stdout has gone, a write fails with EPIPE, which Node raises
 * as an unhandled 'error' event (a stack trace and exit 1). Nobody is left to read anything, so the
 * command ends quietly with exit 0; a long-running command (`faas start`) gets to stop cleanly first.
 */
export interface BrokenPipeWatch {
  /** Replaces the default (exit 0 at once) with a clean stop of the command that is running. */
  onBrokenPipe(stop: () => void): void;
}

export function watchBrokenPipe(
  stream: NodeJS.WriteStream = process.stdout,
  exit: (code: number) => void = (code) => process.exit(code),
): BrokenPipeWatch {
  let stop: (() => void) | undefined;
  let broken = false;
  stream.on("error", (err: NodeJS.ErrnoException) => {
    // Writes after the first EPIPE fail too (the stream is destroyed): the first one decided.
    if (broken) return;
    if (err.code !== "EPIPE") throw err;
    broken = true;
    if (stop) stop();
    else exit(0);
  });
  return {
    onBrokenPipe(fn) {
      stop = fn;
    },
  };
}
