#!/usr/bin/env node
// The `faas` command. The project is TypeScript run through tsx, so there is no separate build step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("./cli.ts");
process.exitCode = await main(process.argv.slice(2));
