/**
 * Zone names map to different physical zones in every account, and metal types are not offered in
 * every zone. The stack's zones are checked against EC2's offerings for each type it launches (the
 * fleet's and the builder's), so a wrong zone fails at preview, not as a launch loop.
 */

/** The zones `instanceType` is offered in, by type (from ec2:DescribeInstanceTypeOfferings). */
export type ZoneOfferings = Readonly<Record<string, readonly string[]>>;

/** Why the configured zones cannot host these types, or undefined when every type is offered in every zone. */
export function zoneOfferingProblem(zones: readonly string[], offered: ZoneOfferings): string | undefined {
  const problems: string[] = [];
  for (const [type, offeredZones] of Object.entries(offered)) {
    const missing = zones.filter((zone) => !offeredZones.includes(zone));
    if (missing.length === 0) continue;
    const where = offeredZones.length > 0 ? [...offeredZones].sort().join(", ") : "no zone of this region";
    problems.push(`${type} is not offered in ${missing.join(", ")} (offered in: ${where})`);
  }
  if (problems.length === 0) return undefined;
  return `availabilityZones: ${problems.join("; ")}; list zones where every type is offered in snapfaas:network.availabilityZones`;
}
