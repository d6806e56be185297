/**
 * Stand-ins for what a host's boot script would use to touch the machine or the network (systemctl,
 * dnf, modprobe, sysctl, useradd, ip, nft, the aws CLI, curl, wget). Each records its argv to one file
 * and does the smallest honest thing: `aws` and `curl` serve files from a local "world" folder (S3
 * objects, SSM parameters, release downloads), the rest succeed without doing anything.
 */
import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";

export interface StandInWorld {
  /** Folder holding the stand-ins: put it first on PATH. */
  readonly bin: string;
  /** One line per call: `<command> <args...>`. */
  readonly callsFile: string;
  /** s3/<bucket>/<key>, ssm/<name:version with / and : as _>, downloads/<file name of the URL>. */
  readonly world: string;
}

/** The file an SSM parameter (name, optionally `name:version`) is served from. */
export function ssmParameterFile(world: string, nameAndVersion: string): string {
  return path.join(world, "ssm", nameAndVersion.replace(/[/:]/g, "_"));
}

const RECORD = 'echo "$(basename "$0") $*" >> "$STAND_IN_CALLS"';

/** The default route the `ip` stand-in reports: the uplink of a host's function egress is its `dev`. */
export const STAND_IN_UPLINK = "ens5";
const STAND_IN_DEFAULT_ROUTE = `default via 10.40.0.1 dev ${STAND_IN_UPLINK} proto dhcp src 10.40.1.9 metric 512`;

const SCRIPTS: Record<string, string> = {
  aws: `${RECORD}
case "$1 $2" in
  "ssm get-parameter")
    shift 2; name=""
    while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift 2 ;; *) shift ;; esac; done
    file="$STAND_IN_WORLD/ssm/$(printf %s "$name" | tr '/:' '__')"
    [ -f "$file" ] || { echo "An error occurred (ParameterNotFound): $name" >&2; exit 254; }
    cat "$file"; echo ;;
  "s3 cp")
    shift 2; recursive=0; paths=()
    for a in "$@"; do case "$a" in --recursive) recursive=1 ;; --*) ;; *) paths+=("$a") ;; esac; done
    src="$STAND_IN_WORLD/s3/\${paths[0]#s3://}"; dest="\${paths[1]}"
    if [ "$recursive" = 1 ]; then
      [ -d "$src" ] || exit 0
      mkdir -p "$dest" && cp -R "$src/." "$dest"
    else
      [ -f "$src" ] || { echo "fatal error: An error occurred (404) when calling the HeadObject operation" >&2; exit 1; }
      mkdir -p "$(dirname "$dest")" && cp "$src" "$dest"
    fi ;;
  *) echo "aws stand-in: not rehearsed: $*" >&2; exit 2 ;;
esac`,
  curl: `${RECORD}
out=""; url=""
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2 ;; --retry) shift 2 ;; -*) shift ;; *) url="$1"; shift ;; esac; done
file="$STAND_IN_WORLD/downloads/$(basename "$url")"
[ -f "$file" ] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
cp "$file" "$out"`,
  wget: `${RECORD}\necho "wget stand-in: not rehearsed" >&2\nexit 2`,
  // An EC2 host's default route, as `ip -o -4 route show default` prints it.
  ip: `${RECORD}\n[ "$1" = -V ] && echo "ip utility, iproute2-stand-in"\n[ "$*" = "-o -4 route show default" ] && echo "${STAND_IN_DEFAULT_ROUTE}"\nexit 0`,
  nft: `${RECORD}\n[ "$1" = --version ] && echo "nftables v1.0.0 (stand-in)"\nexit 0`,
  systemctl: `${RECORD}\nexit 0`,
  dnf: `${RECORD}\nexit 0`,
  modprobe: `${RECORD}\nexit 0`,
  sysctl: `${RECORD}\nexit 0`,
  useradd: `${RECORD}\nexit 0`,
};

/** Writes the stand-ins under `dir` (bin/, world/, calls.log). */
export async function writeStandIns(dir: string): Promise<StandInWorld> {
  const bin = path.join(dir, "bin");
  const world = path.join(dir, "world");
  await mkdir(bin, { recursive: true });
  for (const sub of ["s3", "ssm", "downloads"]) await mkdir(path.join(world, sub), { recursive: true });
  for (const [name, body] of Object.entries(SCRIPTS)) {
    const file = path.join(bin, name);
    await writeFile(file, `#!/bin/bash\nset -euo pipefail\n${body}\n`);
    await chmod(file, 0o755);
  }
  const callsFile = path.join(dir, "calls.log");
  await writeFile(callsFile, "");
  return { bin, callsFile, world };
}

/** The environment the stand-ins need, on top of PATH. */
export function standInEnv(w: StandInWorld): Record<string, string> {
  return {
    PATH: `${w.bin}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    STAND_IN_CALLS: w.callsFile,
    STAND_IN_WORLD: w.world,
  };
}
