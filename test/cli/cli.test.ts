/**
 * The faas command line: help for every command, options anywhere, mistakes named with what is allowed
 * (exit 2), --json for scripts against a real agent, and a quiet exit when its reader goes away.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { watchBrokenPipe } from "../../host-agent/cli/broken-pipe.ts";
import { COMMANDS } from "../../host-agent/cli/cli.ts";
import { optionsOf, parseLine, stringsOption, UsageError } from "../../host-agent/cli/command.ts";
import { HELLO_CALL, startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FAAS = path.join(REPO, "host-agent/cli/faas.js");

/** Runs the real `faas` entry through bash, so a pipeline's own exit statuses can be read. */
function shell(
  script: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", script], { env: { ...process.env, FAAS: FAAS, ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c;
    });
    child.stderr.on("data", (c: Buffer) => {
      err += c;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, out, err }));
  });
}

describe("faas command line", function () {
  this.timeout(60_000);

  it("lists every command in `faas help`, and `faas <command> --help` is `faas help <command>`", async () => {
    const overview = await runCli(undefined, ["help"]);
    assert.equal(overview.code, 0);
    for (const cmd of COMMANDS) {
      assert.ok(
        overview.printed.some((l) => l.startsWith(`  ${cmd.name} `)),
        `faas help lists ${cmd.name}`,
      );
      const viaHelp = await runCli(undefined, ["help", cmd.name]);
      const viaFlag = await runCli(undefined, [cmd.name, "--help"]);
      const viaShort = await runCli(undefined, ["-h", cmd.name]);
      assert.equal(viaHelp.code, 0);
      assert.deepEqual(viaFlag, viaHelp, `faas ${cmd.name} --help`);
      assert.deepEqual(viaShort, viaHelp, `faas -h ${cmd.name}`);
      const text = viaHelp.printed.join("\n");
      assert.match(text, new RegExp(`^usage: faas ${cmd.name}\\b`));
      for (const option of Object.keys(optionsOf(cmd)))
        assert.ok(text.includes(`--${option}`), `${cmd.name} --${option}`);
      for (const arg of cmd.positionals)
        assert.ok(text.includes(`<${arg.name}>`), `${cmd.name} <${arg.name}>`);
    }
    // `--json` is offered by every command that prints data.
    const withoutJson = COMMANDS.filter((c) => !c.json).map((c) => c.name);
    assert.deepEqual(withoutJson, []);
  });

  it("names what is allowed for an unknown command or option, with exit code 2", async () => {
    const bare = await runCli(undefined, []);
    assert.equal(bare.code, 2);
    assert.ok(bare.errors.includes("commands:"), "a bare faas shows the commands on stderr");

    const unknown = await runCli(undefined, ["deplyo", "examples/hello-world"]);
    assert.equal(unknown.code, 2);
    assert.equal(
      unknown.errors[0],
      `faas: unknown command "deplyo": choose one of ${COMMANDS.map((c) => c.name).join(", ")} (faas help lists the commands)`,
    );
    assert.equal(unknown.printed.length, 0);

    for (const cmd of COMMANDS) {
      const res = await runCli(undefined, [cmd.name, "--frobnicate"]);
      assert.equal(res.code, 2, cmd.name);
      assert.match(
        res.errors[0] ?? "",
        new RegExp(`^faas ${cmd.name}: unknown option --frobnicate: allowed are .*-h, --help$`),
      );
      assert.match(res.errors[1] ?? "", new RegExp(`^usage: faas ${cmd.name}\\b`));
    }
    const cases: Array<[string[], string]> = [
      [["deploy"], "faas deploy: missing <dir>"],
      [["invoke", "hello-world"], "faas invoke: missing <Class.method>"],
      [["rm", "a", "b"], 'faas rm: unexpected argument "b": it takes at most <name>'],
      [["ls", "extra"], 'faas ls: unexpected argument "extra": it takes no arguments'],
      [["logs", "hello-world", "--limit"], "faas logs: --limit needs a value"],
      [["deploy", "dir", "--name", "--json"], "faas deploy: --name needs a value"],
      [["ls", "--json=yes"], "faas ls: --json takes no value"],
      [["init", "x", "--template", "vue"], 'faas init: --template must be one of class, handler: got "vue"'],
      [
        ["invoke", "f", "C.m", "-1"],
        'faas invoke: unknown option -1: allowed are --json, -h, --help (a value starting with "-" goes after "--")',
      ],
      [
        ["help", "nope"],
        `faas: unknown command "nope": choose one of ${COMMANDS.map((c) => c.name).join(", ")} (faas help lists the commands)`,
      ],
    ];
    for (const [argv, message] of cases) {
      const res = await runCli(undefined, argv);
      assert.equal(res.code, 2, argv.join(" "));
      assert.equal(res.errors[0], message);
    }
  });

  it("reads options anywhere on the line, and a value after -- as an argument", () => {
    const deploy = COMMANDS.find((c) => c.name === "deploy")!;
    for (const argv of [
      ["--name", "api", "./fn", "--json"],
      ["./fn", "--json", "--name", "api"],
      ["--json", "--name=api", "./fn"],
    ]) {
      const line = parseLine(deploy, argv);
      assert.deepEqual(
        { args: line.args, name: line.options.name, json: line.json },
        {
          args: { dir: "./fn" },
          name: "api",
          json: true,
        },
      );
    }
    const invoke = COMMANDS.find((c) => c.name === "invoke")!;
    assert.deepEqual(parseLine(invoke, ["f", "--", "C.m", "-1"]).args, {
      name: "f",
      "Class.method": "C.m",
      params: "-1",
    });
    assert.throws(() => parseLine(deploy, []), UsageError);
    // An option given twice: the last one wins, unless it is declared `multiple` (then all, in order).
    assert.equal(parseLine(deploy, ["d", "--name", "a", "--name", "b"]).options.name, "b");
    const withEnv = {
      ...deploy,
      options: { ...deploy.options, env: { type: "string", multiple: true, description: "KEY=VALUE" } },
    } as const;
    const line = parseLine(withEnv, ["--env", "A=1", "d", "--env=B=2"]);
    assert.deepEqual(stringsOption(line, "env"), ["A=1", "B=2"]);
    assert.deepEqual(stringsOption(parseLine(withEnv, ["d"]), "env"), []);
    // --help wins over a missing argument: `faas deploy --help` shows the help.
    assert.equal(parseLine(deploy, ["--help"]).help, true);
  });

  it("exits 0 without a stack trace when its reader goes away (faas help | true, | head -1)", async () => {
    // `true` exits before faas (tsx) has started, so every write meets a closed pipe: EPIPE.
    // ($PIPESTATUS is the first command's exit status.)
    const closed = await shell('"$FAAS" help | true; echo "faas exit $PIPESTATUS" >&2');
    assert.equal(closed.err, "faas exit 0\n");
    const head = await shell('"$FAAS" help rm | head -1; echo "faas exit $PIPESTATUS" >&2');
    assert.equal(head.out, `usage: faas rm <name> [--json]\n`);
    assert.equal(head.err, "faas exit 0\n");
  });

  it("on a broken pipe stops a long-running command through its own stop, else exits 0", () => {
    const stream = new EventEmitter() as unknown as NodeJS.WriteStream;
    const exits: number[] = [];
    watchBrokenPipe(stream, (code) => exits.push(code));
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    stream.emit("error", epipe);
    stream.emit("error", epipe);
    assert.deepEqual(exits, [0]);

    const other = new EventEmitter() as unknown as NodeJS.WriteStream;
    let stopped = 0;
    watchBrokenPipe(other, (code) => exits.push(code)).onBrokenPipe(() => stopped++);
    other.emit("error", epipe);
    assert.equal(stopped, 1);
    assert.deepEqual(exits, [0], "no exit: the command stops itself");
    // Any other error of the stream is not a reader going away: it is thrown as before.
    const failing = new EventEmitter() as unknown as NodeJS.WriteStream;
    watchBrokenPipe(failing, (code) => exits.push(code));
    assert.throws(() => failing.emit("error", Object.assign(new Error("disk"), { code: "EIO" })), /disk/);
    assert.deepEqual(exits, [0]);
  });

  it("doctor: one line naming the file it cannot read, and --json with every check", async () => {
    const missing = await runCli(undefined, ["doctor", "/nonexistent/firecracker.json"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.errors.length, 1);
    assert.match(missing.errors[0]!, /^faas: \/nonexistent\/firecracker\.json: ENOENT/);
    const report = await runCli(undefined, ["doctor", "--json"]);
    const parsed = JSON.parse(report.printed.join("\n")) as {
      ok: boolean;
      checks: Array<{ name: string; ok: boolean }>;
    };
    assert.equal(report.code, parsed.ok ? 0 : 1);
    assert.ok(parsed.checks.some((c) => c.name === "kernel"));
  });
});

describe("faas commands against a running agent (--json)", function () {
  this.timeout(120_000);
  let agent: TestAgent;
  let work: string;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent();
    work = await mkdtemp(path.join(tmpdir(), "faas-cli-"));
  });
  after(async () => {
    await agent?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("deploy, ls, invoke, logs, rm and release print the agent's answers as JSON", async () => {
    const deployed = await runCli(agent, [
      "--json",
      "deploy",
      "--name",
      "greeting",
      path.join(REPO, "examples/hello-world"),
    ]);
    assert.equal(deployed.code, 0, deployed.errors.join("\n"));
    const answer = JSON.parse(deployed.printed.join("\n"));
    assert.equal(answer.function.name, "greeting");
    assert.equal(answer.function.revision, 1);
    assert.equal(answer.url, `${agent.dataUrl}/greeting`);

    const listed = await runCli(agent, ["ls", "--json"]);
    const fns = JSON.parse(listed.printed.join("\n")).functions as Array<{ name: string; codeHash: string }>;
    assert.deepEqual(
      fns.map((f) => f.name),
      ["greeting"],
    );
    assert.equal(fns[0]!.codeHash, answer.function.codeHash);
    const plain = await runCli(agent, ["ls"]);
    assert.match(
      plain.printed[0]!,
      new RegExp(`^greeting\\s+rev 1\\s+${answer.function.codeHash.slice(0, 12)}  `),
    );

    const called = await runCli(agent, ["invoke", "greeting", HELLO_CALL.method, "--json"]);
    assert.equal(called.code, 0);
    assert.deepEqual(JSON.parse(called.printed.join("\n")), {
      jsonrpc: "2.0",
      result: "Hello world!",
      error: null,
      id: 1,
    });
    const bad = await runCli(agent, ["invoke", "greeting", "HelloWorldService.nope", "--json"]);
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.printed.join("\n")).error.code, -32601);

    const logs = await runCli(agent, ["logs", "--json", "greeting", "--limit", "5"]);
    const lines = JSON.parse(logs.printed.join("\n")).lines as Array<{ msg: string }>;
    assert.ok(lines.some((l) => l.msg === "Hello world - request received!"));

    const release = await runCli(agent, ["release", "--json"]);
    assert.equal(JSON.parse(release.printed.join("\n")).current.baseVersion, agent.base.version);

    const removed = await runCli(agent, ["rm", "greeting", "--json"]);
    assert.deepEqual(JSON.parse(removed.printed.join("\n")), { deleted: "greeting" });
    assert.equal((await agent.call("greeting", HELLO_CALL)).status, 404);
  });

  it("a failed call to the agent is one line and exit 1", async () => {
    const res = await runCli(agent, ["rm", "never-deployed"]);
    assert.equal(res.code, 1);
    assert.equal(res.errors.length, 1);
    assert.match(res.errors[0]!, /^faas: DELETE \/v1\/functions\/never-deployed failed \(404\): /);
  });
});
