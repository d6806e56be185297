#!/usr/bin/env node
// The `faas` command. The project is TypeScript run through tsx, so there is no separate build step.
import { register } from "tsx/esm/api";

register();
const { watchBrokenPipe } = await import("./broken-pipe.ts");
const { main } = await import("./cli.ts");
// `faas ls | head -1`: when the reader goes away, end quietly (exit 0), or stop `faas start` cleanly.
const pipe = watchBrokenPipe(process.stdout);
process.exitCode = await main(process.argv.slice(2), { onBrokenPipe: (stop) => pipe.onBrokenPipe(stop) });
