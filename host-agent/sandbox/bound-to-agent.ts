/**
 * How a sandbox process gives up root and binds its life to the agent's: setpriv drops to the
 * instance's uid/gid with no capabilities and no_new_privs, then arms the parent-death signal, and a
 * shell checks the agent is still its parent before it execs the rest. Shared by both drivers: the
 * process sandbox's jail (before bwrap) and the QEMU backend's VMM (before the PID namespace QEMU runs
 * in), so neither outlives a killed agent. Pure.
 */

/** The environment variable the check reads: the agent's pid. */
export const AGENT_PID_ENV = "FAAS_AGENT_PID";

/**
 * Run after setpriv has set the parent-death signal (after its uid change, which clears it): if the agent
 * died before that, the process was already handed to init and the signal will never come, so it exits
 * here instead of living on as an orphan until the next agent's cleanup. `$PPID` is read at shell start,
 * which is after the signal was armed: either the agent is still the parent then, or it is gone.
 */
export const BOUND_TO_AGENT_SCRIPT = `[ "$PPID" = "$${AGENT_PID_ENV}" ] || exit 98; unset ${AGENT_PID_ENV}; exec "$@"`;

/** The exit code of a process whose agent died before it could bind its life to it. */
export const AGENT_GONE_EXIT = 98;

export interface Unprivileged {
  readonly uid: number;
  readonly gid: number;
}

/**
 * `setpriv ... -- /bin/sh -c BOUND_TO_AGENT_SCRIPT <name>`: put the command to run after it. The caller
 * sets AGENT_PID_ENV to its own pid in the environment. With `who`, it first drops to that uid/gid with
 * no capabilities and no_new_privs (root refused by name); without, the command stays root and must keep
 * its own credentials (a later uid change would clear the signal).
 */
export function boundToAgentCommand(name: string, who?: Unprivileged): string[] {
  const drop = who === undefined ? [] : dropTo(who);
  return [
    "setpriv",
    ...drop,
    // Armed after the uid change above (a credential change clears it); checked by the sh below.
    "--pdeathsig=KILL",
    "--",
    "/bin/sh",
    "-c",
    BOUND_TO_AGENT_SCRIPT,
    name,
  ];
}

function dropTo(who: Unprivileged): string[] {
  for (const [what, id] of [
    ["uid", who.uid],
    ["gid", who.gid],
  ] as const) {
    if (!Number.isInteger(id) || id <= 0) throw new Error(`a sandbox never runs as root: ${what} ${id}`);
  }
  return [
    `--reuid=${who.uid}`,
    `--regid=${who.gid}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
  ];
}
