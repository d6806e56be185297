/** Carves public and private subnets out of a VPC CIDR: 16 equal blocks, public from 0, private from 8. */

function toInt(ip: string): number {
  return ip.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}

function toIp(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}

export function subnetCidr(vpcCidr: string, tier: "public" | "private", index: number): string {
  const [address, prefixText] = vpcCidr.split("/");
  const prefix = Number(prefixText);
  if (!address || !Number.isInteger(prefix) || prefix < 8 || prefix > 24) {
    throw new Error(`VPC CIDR ${vpcCidr} must have a prefix between /8 and /24`);
  }
  if (!Number.isInteger(index) || index < 0 || index > 7) throw new Error("at most 8 availability zones");
  const subnetPrefix = prefix + 4;
  const blockSize = 2 ** (32 - subnetPrefix);
  const base = toInt(address) - (toInt(address) % 2 ** (32 - prefix));
  const block = (tier === "public" ? 0 : 8) + index;
  return `${toIp(base + block * blockSize)}/${subnetPrefix}`;
}
