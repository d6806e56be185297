/**
 * Address ranges a stack must not use where a real address is meant. The shipped stack files carry a
 * TEST-NET placeholder for the builder's SSH source; left in place, Pulumi would dial the builder for
 * about half an hour before failing, so it is refused at preview instead.
 */

/** RFC 5737 documentation ranges: never routed, so no operator's machine has such an address. */
export const TEST_NET_RANGES = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] as const;

function toInt(address: string): number {
  return address.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

function parseCidr(cidr: string): { start: number; end: number } | undefined {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr);
  if (!m || m[1]!.split(".").some((o) => Number(o) > 255) || Number(m[2]) > 32) return undefined;
  const size = 2 ** (32 - Number(m[2]));
  const start = Math.floor(toInt(m[1]!) / size) * size;
  return { start, end: start + size - 1 };
}

/** Why `cidr` cannot be where `pulumi up` runs from, or undefined when it can. */
export function sshSourceCidrProblem(cidr: string): string | undefined {
  const range = parseCidr(cidr);
  if (!range) return `${cidr} is not an IPv4 CIDR like 198.18.7.4/32`;
  for (const testNet of TEST_NET_RANGES) {
    const t = parseCidr(testNet)!;
    if (range.start <= t.end && t.start <= range.end) {
      return `${cidr} is in the documentation range ${testNet} (a placeholder): set your own address, e.g. pulumi config set --path 'snapfaas:bake.sshIngressCidr' "$(curl -fsS https://checkip.amazonaws.com)/32"`;
    }
  }
  return undefined;
}
