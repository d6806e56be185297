/**
 * The Node.js the fleet hosts run the agent on, in one place: the boot script installs it and the
 * agent bundle is compiled for it.
 *
 * Node 24 (LTS until 2028-04) rather than 22 (LTS until 2027-04): a host launched today should not need
 * a runtime change within months. Amazon Linux 2023 ships it as the `nodejs24` package, whose binary is
 * /usr/bin/node-24 (the AL2023 "Node.js in AL2023" page: versioned packages nodejs20, nodejs22 and
 * nodejs24 install side by side as node-<major>).
 */
export const HOST_NODE = {
  major: 24,
  /** The AL2023 package. */
  dnfPackage: "nodejs24",
  /** Its binary: versioned, so another Node on the host cannot take its place. */
  binary: "/usr/bin/node-24",
  /** What esbuild compiles the agent bundle for. */
  esbuildTarget: "node24",
} as const;
