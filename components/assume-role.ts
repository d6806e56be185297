/** The trust policy that lets one AWS service (ec2.amazonaws.com, lambda.amazonaws.com) assume a role. */
export function assumeRolePolicy(service: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Principal: { Service: service }, Action: "sts:AssumeRole" }],
  });
}
